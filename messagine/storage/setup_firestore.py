"""The gcloud commands that prepare a Firestore database: composite indexes and TTL.

``python -m messagine.storage.setup_firestore --project P`` prints them from
firestore.indexes.json (the Firebase CLI deploys the same file with
``firebase deploy --only firestore:indexes``); cloudbuild.yaml runs them when the bot is
deployed on Firestore. Creating an index that exists already fails harmlessly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

INDEXES_FILE = Path(__file__).with_name("firestore.indexes.json")


def gcloud_commands(project: str) -> list[str]:
    """One command per composite index, then one per TTL field."""
    spec = json.loads(INDEXES_FILE.read_text())
    commands = []
    for index in spec["indexes"]:
        fields = " ".join(
            f"--field-config=field-path={field['fieldPath']},"
            + (f"order={field['order'].lower()}" if "order" in field
               else f"array-config={field['arrayConfig'].lower()}")
            for field in index["fields"])
        commands.append(
            f"gcloud firestore indexes composite create --project={project} "
            f"--collection-group={index['collectionGroup']} "
            f"--query-scope={index['queryScope']} {fields} --async")
    commands.extend(
        f"gcloud firestore fields ttls update {override['fieldPath']} "
        f"--collection-group={override['collectionGroup']} --enable-ttl "
        f"--project={project} --async"
        for override in spec.get("fieldOverrides", []) if override.get("ttl"))
    return commands


def main() -> None:
    """Print the commands, one a line, for a shell or cloudbuild.yaml to run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True, help="the Google Cloud project id")
    for command in gcloud_commands(parser.parse_args().project):
        sys.stdout.write(command + "\n")


if __name__ == "__main__":
    main()
