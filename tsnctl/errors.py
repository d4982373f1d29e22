"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input from the user (a file, a list line, a config value): message says where and what.

    ``exit_code`` follows the CLI convention: 2 for bad input or usage, 1 for a failure while working.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
