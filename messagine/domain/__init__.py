"""The product's rules as pure functions and records, free of any storage or Telegram type.

Each storage adapter reads what a rule needs, calls the rule, and commits the outcome
under its own guard; so a rule is written, and tested, once.
"""
