"""The shipped tag taxonomy and its loader: content, every validation rule, lookups, suggest()."""

from __future__ import annotations

import functools
import json
import re
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.audience.expr import RESERVED, Tag, parse
from engine.rules.loading import RuleError, default_rules_dir
from engine.rules.taxonomy import KEY_PATTERN, TagDef, Taxonomy, load_taxonomy
from tests.props import examples

REQUIRED = (
    "elderly",
    "elderly_alone",
    "student",
    "minor",
    "left_behind_child",
    "disabled",
    "key_vehicle_driver",
    "school_bus_driver",
    "truck_driver",
    "ebike_rider",
    "shop_owner",
    "hotel_staff",
    "fraud_victim",
    "fraud_high_risk",
    "antifraud_app",
    "warned_7d",
    "warned_30d",
    "antifraud_msg_7d",
    "grid_member",
    "village_cadre",
    "volunteer",
    "teacher",
    "veteran",
    "migrant_worker",
    "renter",
)
REQUIRED_DYNAMIC = {"warned_7d", "warned_30d", "antifraud_msg_7d"}
CJK = re.compile(r"[\u4e00-\u9fff]")


@functools.cache
def shipped() -> Taxonomy:
    return load_taxonomy()


def q(value: str) -> str:
    """A TOML basic string (JSON escapes are valid TOML escapes)."""
    return json.dumps(value, ensure_ascii=False)


def tag_toml(key: str = "elderly", label: str = "老年人", extra: str = "") -> str:
    return f"[[category.tag]]\nkey = {q(key)}\nlabel = {q(label)}\n{extra}"


def cat_toml(key: str = "social", label: str = "社会属性", tags: str | None = None) -> str:
    body = tag_toml() if tags is None else tags
    return f"[[category]]\nkey = {q(key)}\nlabel = {q(label)}\n{body}"


V1 = "version = 1\n"


def one_category(tags: str) -> str:
    """A version-1 file with one category holding ``tags``."""
    return V1 + cat_toml(tags=tags)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "taxonomy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> RuleError:
    path = write(tmp_path, text)
    with pytest.raises(RuleError) as info:
        load_taxonomy(path)
    err = info.value
    assert err.file == str(path)
    assert str(path) in str(err)
    return err


# --- the shipped file ------------------------------------------------------------------------


def test_shipped_file_loads_with_seven_categories_and_about_960_tags():
    tx = shipped()
    assert len(tx.categories) == 7
    assert 930 <= len(tx) <= 990
    assert len(tx.keys) == len(tx)
    labels = {c.label for c in tx.categories}
    for expected in ("社会属性", "重点人群关爱", "重点行业场所", "交通安全", "园区校园安全"):
        assert expected in labels
    assert all(len(c.tags) >= 50 for c in tx.categories), "categories should be substantial"


def test_shipped_default_path_is_the_rules_folder():
    tx = shipped()
    assert tx.source == str(default_rules_dir() / "taxonomy.toml")
    assert load_taxonomy(str(default_rules_dir() / "taxonomy.toml")).keys == tx.keys


@pytest.mark.parametrize("key", REQUIRED)
def test_shipped_has_required_key(key):
    assert key in shipped()


def test_shipped_dynamic_flags():
    tx = shipped()
    for key in REQUIRED_DYNAMIC:
        assert tx.tag(key).dynamic, key
    for key in set(REQUIRED) - REQUIRED_DYNAMIC:
        assert not tx.tag(key).dynamic, key
    assert set(tx.dynamic_keys) == {k for k in tx.keys if tx.tag(k).dynamic}
    assert set(tx.dynamic_keys) >= REQUIRED_DYNAMIC


def test_shipped_tags_have_chinese_labels_unique_and_valid_keys():
    tx = shipped()
    seen: dict[str, str] = {}
    for key in tx.keys:
        tag = tx.tag(key)
        assert KEY_PATTERN.fullmatch(key), key
        assert key not in RESERVED
        assert CJK.search(tag.label), f"{key}: label {tag.label!r} has no Chinese"
        assert tag.label not in seen, f"{key} and {seen.get(tag.label)} share a label"
        seen[tag.label] = key
    for cat in tx.categories:
        assert KEY_PATTERN.fullmatch(cat.key) and CJK.search(cat.label)


def test_every_shipped_key_parses_as_an_audience_tag():
    for key in shipped().keys:
        assert parse(key) == Tag(key, 0)


def test_shipped_categories_of_known_tags():
    tx = shipped()
    assert tx.category_of("elderly") == "social"
    assert tx.category_of("elderly_alone") == "care"
    assert tx.category_of("hotel_staff") == "industry"
    assert tx.category_of("school_bus_driver") == "traffic"
    assert tx.category_of("teacher") == "campus"
    assert tx.category_of("fraud_victim") == "antifraud"
    assert tx.category_of("warned_7d") == "governance"
    assert "独居" in tx.tag("elderly_alone").label


# --- runtime API -----------------------------------------------------------------------------


def test_ids_are_positions_in_file_order():
    tx = shipped()
    assert tx.keys == tuple(t.key for c in tx.categories for t in c.tags)
    assert list(tx) == list(tx.keys)
    for i, key in enumerate(tx.keys):
        assert tx.index(key) == i
        assert tx.get(key) == i
    assert tx.keys[0] == tx.categories[0].tags[0].key


def test_unknown_keys():
    tx = shipped()
    assert tx.get("eldery") is None
    assert "eldery" not in tx
    assert 5 not in tx
    with pytest.raises(KeyError, match="did you mean elderly"):
        tx.index("eldery")
    with pytest.raises(KeyError):
        tx.tag("nope_not_a_tag")
    with pytest.raises(KeyError):
        tx.category_of("nope_not_a_tag")


def test_tag_def_fields():
    tag = shipped().tag("warned_7d")
    assert isinstance(tag, TagDef)
    assert (tag.key, tag.dynamic, tag.category) == ("warned_7d", True, "governance")
    assert tag.label and isinstance(tag.description, str)


def test_taxonomy_and_its_parts_are_immutable():
    tx = shipped()
    with pytest.raises(AttributeError):
        tx._keys = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        tx.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        tx.tag("elderly").label = "x"  # type: ignore[misc]
    assert isinstance(tx.keys, tuple) and isinstance(tx.categories, tuple)


def test_from_keys_builds_a_small_test_taxonomy():
    tx = Taxonomy.from_keys(["a", "b_c", "warned_7d"], dynamic=["warned_7d"])
    assert tx.keys == ("a", "b_c", "warned_7d")
    assert [c.key for c in tx.categories] == ["test"]
    assert tx.category_of("b_c") == "test"
    assert tx.dynamic_keys == ("warned_7d",)
    assert tx.index("warned_7d") == 2
    assert tx.source == "<from_keys>"


@pytest.mark.parametrize(
    ("keys", "path", "says"),
    [
        (["ok", "Bad"], "category[0].tag[1].key", "^[a-z]"),
        (["ok", "ok"], "category[0].tag[1].key", "already defined at category[0].tag[0].key"),
        (["grid"], "category[0].tag[0].key", "reserved"),
        ([], "category[0].tag", "at least one"),
    ],
)
def test_from_keys_validates(keys, path, says):
    with pytest.raises(RuleError) as info:
        Taxonomy.from_keys(keys)
    assert (info.value.file, info.value.key) == ("<from_keys>", path)
    assert says in info.value.expected


def test_from_keys_rejects_unknown_dynamic_key():
    with pytest.raises(ValueError, match="zzz"):
        Taxonomy.from_keys(["a"], dynamic=["zzz"])


# --- validation: each rule names file, key path and what was expected ------------------------


def test_minimal_valid_file(tmp_path):
    text = (
        "version = 1\n"
        + cat_toml(tags=tag_toml("elderly", "老年人", 'description = "60+"\n'))
        + cat_toml("traffic", "交通安全", tag_toml("warned_7d", "7日内", "dynamic = true\n"))
    )
    tx = load_taxonomy(write(tmp_path, text))
    assert tx.keys == ("elderly", "warned_7d")
    assert tx.tag("elderly").description == "60+"
    assert tx.tag("warned_7d").dynamic and not tx.tag("elderly").dynamic


def test_toml_syntax_error(tmp_path):
    err = load_error(tmp_path, "version = 1\n[[category]\nkey = 'x'\n")
    assert err.key == "(top level)"
    assert "valid TOML syntax" in err.expected


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(RuleError) as info:
        load_taxonomy(missing)
    assert info.value.file == str(missing)
    assert "readable" in info.value.expected


@pytest.mark.parametrize(
    ("text", "key", "type_"),
    [
        ('version = "1"\n' + cat_toml(), "version", "int"),
        (
            one_category(tag_toml(extra="dynamic = 'yes'\n")),
            "category[0].tag[0].dynamic",
            "bool",
        ),
        (
            one_category("[[category.tag]]\nkey = 'elderly'\nlabel = 5\n"),
            "category[0].tag[0].label",
            "str",
        ),
        (V1 + "category = 3\n", "category", "array"),
        (V1 + "[[category]]\nkey = 'a'\nlabel = '甲'\ntag = 'x'\n", "category[0].tag", "array"),
    ],
)
def test_wrong_type(tmp_path, text, key, type_):
    err = load_error(tmp_path, text)
    assert err.key == key
    assert err.expected.startswith("expected")
    assert type_ in err.expected


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (cat_toml(), "version"),
        (V1, "category"),
        (V1 + "[[category]]\nkey = 'social'\nlabel = '社会'\n", "category[0].tag"),
        (one_category("[[category.tag]]\nkey = 'elderly'\n"), "category[0].tag[0].label"),
        (one_category("[[category.tag]]\nlabel = '老人'\n"), "category[0].tag[0].key"),
        (V1 + "[[category]]\nlabel = '社会'\n" + tag_toml(), "category[0].key"),
    ],
)
def test_missing_field(tmp_path, text, key):
    err = load_error(tmp_path, text)
    assert err.key == key
    assert "required" in err.expected and "missing" in err.expected


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (one_category(tag_toml(extra="lable = '老人'\n")), "category[0].tag[0].lable"),
        (one_category(tag_toml(extra="dynamic = true\nweight = 3\n")), "category[0].tag[0].weight"),
        (V1 + "name = 'x'\n" + cat_toml(), "name"),
        (
            V1 + "[[category]]\nkey = 'a'\nlabel = '甲'\ncolour = 1\n" + tag_toml(),
            "category[0].colour",
        ),
    ],
)
def test_unknown_field(tmp_path, text, key):
    err = load_error(tmp_path, text)
    assert err.key == key
    assert "unknown field" in err.expected


def test_wrong_version(tmp_path):
    err = load_error(tmp_path, "version = 2\n" + cat_toml())
    assert err.key == "version"
    assert "version = 1" in err.expected and "got 2" in err.expected


def test_no_categories(tmp_path):
    err = load_error(tmp_path, "version = 1\ncategory = []\n")
    assert err.key == "category"
    assert "at least one [[category]]" in err.expected


def test_category_without_tags(tmp_path):
    text = "version = 1\n" + cat_toml() + "[[category]]\nkey = 'empty'\nlabel = '空'\ntag = []\n"
    err = load_error(tmp_path, text)
    assert err.key == "category[1].tag"
    assert "at least one [[category.tag]]" in err.expected and "'empty'" in err.expected


def test_duplicate_tag_key_across_categories_names_both_places(tmp_path):
    text = (
        "version = 1\n"
        + cat_toml(tags=tag_toml("minor", "未成年人") + tag_toml("elderly", "老年人"))
        + cat_toml("care", "关爱", tag_toml("elderly", "老人又一次"))
    )
    err = load_error(tmp_path, text)
    assert err.key == "category[1].tag[0].key"
    assert "'elderly'" in err.expected
    assert "already defined at category[0].tag[1].key" in err.expected
    assert "unique across the whole file" in err.expected


def test_duplicate_tag_key_in_one_category(tmp_path):
    text = "version = 1\n" + cat_toml(tags=tag_toml("minor", "甲") + tag_toml("minor", "乙"))
    err = load_error(tmp_path, text)
    assert err.key == "category[0].tag[1].key"
    assert "already defined at category[0].tag[0].key" in err.expected


def test_duplicate_category_key(tmp_path):
    text = (
        "version = 1\n"
        + cat_toml("social", "社会", tag_toml("a", "甲"))
        + cat_toml("social", "社会二", tag_toml("b", "乙"))
    )
    err = load_error(tmp_path, text)
    assert err.key == "category[1].key"
    assert "'social'" in err.expected and "already defined at category[0].key" in err.expected


@pytest.mark.parametrize("word", sorted(RESERVED))
def test_reserved_word_as_tag_key(tmp_path, word):
    text = "version = 1\n" + cat_toml(tags=tag_toml("minor", "甲") + tag_toml(word, "乙"))
    err = load_error(tmp_path, text)
    assert err.key == "category[0].tag[1].key"
    assert "reserved word" in err.expected and repr(word) in err.expected


@pytest.mark.parametrize(
    "bad",
    ["Elderly", "1abc", "_x", "has-dash", "has space", "a" * 49, "老人", "", "elderly\n", "a.b"],
)
def test_bad_tag_key_syntax(tmp_path, bad):
    err = load_error(tmp_path, "version = 1\n" + cat_toml(tags=tag_toml(bad, "标签")))
    assert err.key == "category[0].tag[0].key"
    assert "^[a-z][a-z0-9_]{0,47}$" in err.expected
    assert repr(bad) in err.expected


def test_longest_allowed_key_is_accepted(tmp_path):
    key = "a" * 48
    tx = load_taxonomy(write(tmp_path, "version = 1\n" + cat_toml(tags=tag_toml(key, "长"))))
    assert key in tx


@pytest.mark.parametrize("bad", ["Social", "", "交通", "x-y"])
def test_bad_category_key_syntax(tmp_path, bad):
    err = load_error(tmp_path, "version = 1\n" + cat_toml(key=bad))
    assert err.key == "category[0].key"
    assert "^[a-z][a-z0-9_]{0,47}$" in err.expected


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_empty_tag_label(tmp_path, blank):
    err = load_error(tmp_path, "version = 1\n" + cat_toml(tags=tag_toml("elderly", blank)))
    assert err.key == "category[0].tag[0].label"
    assert "non-empty label" in err.expected


def test_empty_category_label(tmp_path):
    err = load_error(tmp_path, "version = 1\n" + cat_toml(label=" "))
    assert err.key == "category[0].label"
    assert "non-empty label" in err.expected


def test_first_error_in_file_order_is_reported(tmp_path):
    text = "version = 1\n" + cat_toml(tags=tag_toml("Bad1", "甲") + tag_toml("grid", "乙"))
    assert load_error(tmp_path, text).key == "category[0].tag[0].key"


def test_shipped_file_round_trips_through_the_strict_decoder():
    raw = (default_rules_dir() / "taxonomy.toml").read_bytes()
    data = msgspec.toml.decode(raw)
    assert data["version"] == 1
    assert sum(len(c["tag"]) for c in data["category"]) == len(shipped())


# --- suggest ---------------------------------------------------------------------------------


def test_suggest_typo():
    assert shipped().suggest("eldery")[0] == "elderly"


def test_suggest_prefix():
    assert shipped().suggest("elder")[:2] == ["elderly", "elderly_alone"]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("studnet", "student"),
        ("teacher_primry", "teacher_primary"),
        ("warned7d", "warned_7d"),
        ("hotel_staf", "hotel_staff"),
        ("Left Behind", "left_behind_child"),
        ("school-bus", "school_bus_driver"),
        ("bus", "school_bus_driver"),
        ("独居", "elderly_alone"),
        ("ANTIFRAUD_APP", "antifraud_app"),
    ],
)
def test_suggest_finds(word, expected):
    assert expected in shipped().suggest(word, n=5)


def test_suggest_exact_key_comes_first_and_n_is_respected():
    tx = shipped()
    assert tx.suggest("student")[0] == "student"
    assert len(tx.suggest("elder", n=1)) == 1
    assert tx.suggest("elder", n=0) == []
    assert len(tx.suggest("e", n=10)) == 10


def test_suggest_nothing_close():
    tx = shipped()
    assert tx.suggest("") == []
    assert tx.suggest("   ") == []
    assert tx.suggest("qqqqqqqqqq") == []
    assert tx.suggest("x" * 10_000) == []


def test_unknown_message():
    tx = shipped()
    assert tx.unknown_message("eldery").startswith(
        "unknown tag 'eldery'; did you mean elderly, elderly_alone"
    )
    assert tx.unknown_message("qqqqqqqqqq") == "unknown tag 'qqqqqqqqqq'"


def test_suggest_on_a_tiny_taxonomy():
    tx = Taxonomy.from_keys(["elderly", "student"])
    assert tx.suggest("eldr") == ["elderly"]
    assert tx.suggest("zzz") == []


def test_suggest_is_fast():
    """Target is < 1 ms per call; the bound is looser so a busy CI machine does not flake."""
    tx = shipped()
    words = ["eldery", "elder", "studnet", "driver", "bus", "独居", "e", "wanred_7d", "xyzzy"]
    words += [k[:-1] + "x" for k in tx.keys[::10]]
    tx.suggest("warm-up")
    start = time.perf_counter()
    for word in words:
        tx.suggest(word)
    mean = (time.perf_counter() - start) / len(words)
    assert mean < 0.003, f"suggest takes {mean * 1e3:.2f} ms per call"


@settings(max_examples=examples(300))
@given(word=st.text(max_size=80), n=st.integers(min_value=-2, max_value=12))
def test_suggest_never_raises_and_returns_real_keys(word, n):
    tx = shipped()
    result = tx.suggest(word, n)
    assert isinstance(result, list)
    assert len(result) <= max(n, 0)
    assert len(set(result)) == len(result)
    assert all(key in tx for key in result)


@given(word=st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True))
def test_suggest_key_like_words(word):
    tx = shipped()
    result = tx.suggest(word)
    assert all(key in tx for key in result)
    if word in tx:
        assert result[0] == word
