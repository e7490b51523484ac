"""Access control: roles and jurisdiction (pure :mod:`policy`), hashed API tokens
(:mod:`tokens`), and the audit log of every write (:mod:`audit`)."""
