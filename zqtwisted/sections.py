"""Imports every module that declares a configuration section, so that parsing knows them all."""

import zqtwisted.check
import zqtwisted.sentry
import zqtwisted.worker

zqtwisted.worker.load_builtin_consumers()

__all__ = ["zqtwisted"]
