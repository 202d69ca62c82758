"""The configuration: the typed schema (`schema`), dotted keys (`dotted`), loading
(`load`) and validation (`validate`). Import the module you need: this package
imports nothing, so the schema stays below everything that validation checks.
"""
