"""Development tools that are never deployed (.gcloudignore leaves this folder out)."""
