"""Errors a user can cause; each carries one line naming the file or flag and what to do."""

from __future__ import annotations


class ConvertError(Exception):
    """Bad input: the CLI prints the message and exits with code 2."""

    exit_code = 2


class AccuracyError(Exception):
    """int8 lost more accuracy than --max-accuracy-drop allows: exit code 3. ``report``: the
    :class:`converters.results.Report` written (report.json), when there is one."""

    exit_code = 3

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report
