"""The shipped consumers, one module per queue family; each exports ``SPECS``, its consumers declared as values.

Importing this package imports none of them: the composition root's list of
shipped specs (:mod:`zqtwisted.catalog`) does.
"""
