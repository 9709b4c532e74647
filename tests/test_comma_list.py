"""comma_list: the one parser of comma-separated option values."""

import pytest

from ucfpipe.core.comma_list import comma_list
from ucfpipe.core.errors import UcfpipeError


def test_values_are_converted_and_blanks_skipped():
    assert comma_list(" 16, 32,,64 ", "--clips", int, positive=True) == (16, 32, 64)
    assert comma_list("0.5,2", "--minutes", float) == (0.5, 2.0)
    assert comma_list(None, "--seeds", int, empty_ok=True) == ()


@pytest.mark.parametrize("text, options, message", [
    ("32,x", dict(kind=int, positive=True), "--flag must be comma-separated positive integers, got '32,x'"),
    ("32,0", dict(kind=int, positive=True), "--flag must be comma-separated positive integers, got '32,0'"),
    ("", dict(kind=int), "--flag must be comma-separated integers, got ''"),
    ("float32,int8", dict(choices=("float32", "bfloat16")), "--flag must be a comma-separated subset of float32, bfloat16"),
    ("1,2,1", dict(kind=int, repeats="refuse"), "--flag lists '1,2,1': each value once"),
])
def test_what_is_wrong_is_one_line(text, options, message):
    with pytest.raises(UcfpipeError, match="^" + message.replace("(", r"\(")):
        comma_list(text, "--flag", **options)


def test_repeats_can_be_dropped_keeping_the_order():
    assert comma_list("64,32,64", "--batch-sizes", int, repeats="drop") == (64, 32)
    assert comma_list("64,32,64", "--batch-sizes", int) == (64, 32, 64)
