"""The one exception type of the bake: caught once in the CLI and printed as one line naming the input at fault."""


class BakeError(Exception):
    """A bake cannot go on; the message names the spec entry or the step."""
