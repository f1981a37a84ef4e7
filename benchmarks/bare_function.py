"""The baseline of the cold-start benchmark: a function that imports only functions-framework."""

import functions_framework


@functions_framework.http
def bare(request: object) -> str:
    """Answer 200 and do nothing else."""
    return "ok"
