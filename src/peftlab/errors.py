"""The exception types whose message is shown to the user as a single line."""


class UserError(Exception):
    """Bad input or environment: the message says what is wrong and what to do."""


class Unsupported(UserError):
    """A method that cannot apply to this model (its structure lacks what the method adapts): a comparison
    records it as 'unsupported' with this reason and runs the other methods."""
