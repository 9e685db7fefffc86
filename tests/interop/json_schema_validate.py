"""Validates JSON documents against a JSON Schema with the `jsonschema` package.

Usage: python json_schema_validate.py SCHEMA DOCUMENT...
Prints one line per document, "ok" or "invalid: <first error>", and exits 0 when every
document is valid, 1 when any is not, 2 on a usage or schema error.
"""

import json
import sys

import jsonschema


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    status = 0
    for path in argv[2:]:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        if errors:
            status = 1
            where = "/".join(str(p) for p in errors[0].path) or "(top)"
            print(f"invalid: {where}: {errors[0].message[:200]}")
        else:
            print("ok")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
