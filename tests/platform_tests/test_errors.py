"""The helpers that quote a foreign error inside a one-line message."""

from sfprompt.platform.errors import first_line, one_line


def test_first_line_is_the_message_head_or_the_type():
    assert first_line(RuntimeError("\n  cannot join\nTraceback (most recent call last):\n")) == \
        "cannot join"
    assert first_line(ConnectionError("")) == "ConnectionError"
    assert first_line(ValueError("   \n ")) == "ValueError"


def test_one_line_keeps_every_line_and_cuts_at_the_limit():
    err = RuntimeError("Error(s) in loading state_dict:\n\tsize mismatch for pos_embed")
    assert one_line(err) == "Error(s) in loading state_dict: size mismatch for pos_embed"
    assert one_line(err, 8) == "Error(s)"
    assert one_line(OSError()) == ""
