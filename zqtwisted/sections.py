"""Imports every module that declares a configuration section, so that parsing knows them all."""

import zqtwisted.ops.check
import zqtwisted.ops.sentry
import zqtwisted.runtime.worker

zqtwisted.runtime.worker.load_builtin_consumers()

__all__ = ["zqtwisted"]
