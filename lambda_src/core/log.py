"""Structured logs of tenantkit's functions: Powertools Logger, one JSON object a line, and the
request's keys (kind, tenant, logical resource id, ...) on every line of every lambda_src module.

A function's entry point calls function_logger() once; its handler wraps each request in
logged_request(). tenantctl's local mode runs the same handlers without a function logger: the
modules' plain `logging` loggers then log as the CLI configured them, and logged_request() adds
nothing. Nothing secret is ever a key: ids, names and ARNs only.
"""

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

PACKAGE = "lambda_src"
"""Every module logger is `lambda_src.<...>` (logging.getLogger(__name__)): one parent."""
_MAX_KEY_LENGTH = 128

_function_logger: Logger | None = None


class _StandardOutput(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is when a line is written (Lambda: CloudWatch), not to the
    stream that was sys.stdout when the handler was made."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


_HANDLER = _StandardOutput()
"""One handler for the process: Powertools keeps the first one a logger of a service gets."""


def function_logger(service: str) -> Logger:
    """The function's Powertools logger (created on the first call: a cold start), with every
    lambda_src module logger writing through it."""
    global _function_logger
    if _function_logger is None:
        logger = Logger(service=service, logger_handler=_HANDLER)
        logging.getLogger(PACKAGE)  # registered, so the copy below reaches it
        copy_config_to_registered_loggers(source_logger=logger, include={PACKAGE})
        _function_logger = logger
    return _function_logger


@contextmanager
def logged_request(**keys: object) -> Iterator[None]:
    """Put `keys` on every log line while a request runs (values shortened to 128 characters;
    None leaves a key out), and take them off after it, so a warm function's next request does
    not inherit them."""
    logger = _function_logger
    values = {k: str(v)[:_MAX_KEY_LENGTH] for k, v in keys.items() if v is not None}
    if logger is None:
        yield
        return
    logger.append_keys(**values)
    try:
        yield
    finally:
        logger.remove_keys(list(values))
