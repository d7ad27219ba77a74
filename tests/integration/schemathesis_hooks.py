"""tests/integration/schemathesis_hooks.py: schemathesis hooks for the contract test.

The batch endpoint takes application/x-ndjson, a media type schemathesis has no serializer
for; its body is a string in the contract, sent as its UTF-8 bytes like text/plain.
"""
import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
# The batch endpoint also takes spreadsheets as text/csv; its body is text as well.
schemathesis.serializer.alias("text/csv", "text/plain")
