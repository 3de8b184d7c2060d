"""Request validation that reports every problem at once, and format checks Connexion leaves out.

Connexion stops at the first schema error; clients fixing a form want all of them.
"""

import json
import uuid

from connexion.datastructures import MediaTypeDict
from connexion.validators import JSONRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator

from db.errors import field_error
from tiris.errors import BadRequest


@Draft4Validator.FORMAT_CHECKER.checks("uuid", raises=ValueError)
def _is_uuid(value) -> bool:
    # Draft 4 has no uuid format; without this a malformed id reaches the database.
    return not isinstance(value, str) or bool(uuid.UUID(value))


def _path(prefix: str, error) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        parts.append(str(error.message).split("'")[1])
    elif error.validator == "additionalProperties" and "'" in error.message:
        parts.append(str(error.message).split("'")[1])
    return "/".join([prefix, *parts]) if prefix else ("/".join(parts) or "$")


def _nul_paths(value, path="") -> list[str]:
    """Where a string holds U+0000, which PostgreSQL cannot store in text or jsonb."""
    if isinstance(value, str):
        return [path or "$"] if "\x00" in value else []
    if isinstance(value, dict):
        found = [f"{path}/{k}".lstrip("/") or "$" for k in value if "\x00" in k]
        return found + [p for k, v in value.items() for p in _nul_paths(v, f"{path}/{k}".lstrip("/"))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nul_paths(v, f"{path}/{i}".lstrip("/"))]
    return []


def _issue(error) -> str:
    """What is wrong, without quoting the value: bodies carry secrets (api_secret) that must not be echoed."""
    rule, schema_value = error.validator, error.validator_value
    if rule == "not" and error.schema.get("format") == "decimal":
        return "must be greater than 0"  # PositiveDecimal's `not: {pattern: zero}`
    messages = {
        "type": lambda: f"must be of type {schema_value}",
        "required": lambda: "is required",
        "additionalProperties": lambda: "is not a known field",
        "enum": lambda: "must be one of: " + ", ".join(map(str, schema_value)),
        "pattern": lambda: f"must match {schema_value}",
        "format": lambda: f"must be a valid {schema_value}",
        "minLength": lambda: "must not be empty" if schema_value == 1 else f"must be at least {schema_value} characters",
        "maxLength": lambda: f"must be at most {schema_value} characters",
        "minimum": lambda: f"must be at least {schema_value}",
        "maximum": lambda: f"must be at most {schema_value}",
        "minProperties": lambda: f"must have at least {schema_value} field(s)",
        "oneOf": lambda: "does not match any of the allowed shapes",
    }
    return messages.get(rule, lambda: f"fails the {rule} rule")()


def _leaf_errors(error) -> list:
    """A failed oneOf explains itself through the branch the body meant (the one whose `type` matched)."""
    if error.validator != "oneOf" or not error.context:
        return [error]
    branches: dict[int, list] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    meant = [errs for errs in branches.values() if not any(list(e.relative_path) == ["type"] for e in errs)]
    if len(meant) != 1:
        return [error]
    return [leaf for sub in meant[0] for leaf in _leaf_errors(sub)]


_ABSENT = object()  # no body at all, which differs from a JSON `null`


class AllErrorsBodyValidator(JSONRequestBodyValidator):
    async def _parse(self, stream, scope):
        raw = b"".join([chunk async for chunk in stream])
        if not raw:
            return _ABSENT
        try:
            return json.loads(raw.decode(self._encoding))
        except UnicodeDecodeError:
            raise BadRequest("The request body is not valid UTF-8.", code="MALFORMED_BODY") from None
        except json.JSONDecodeError as error:
            raise BadRequest(f"The request body is not valid JSON: {error.msg}.", code="MALFORMED_BODY") from None

    def _validate(self, body):
        if body is _ABSENT:  # fine only where the contract makes the body optional
            if self._required:
                raise BadRequest("A JSON request body is required.", details=[field_error("$", "missing")])
            return None
        errors = [leaf for error in self._validator.iter_errors(body) for leaf in _leaf_errors(error)]
        errors.sort(key=lambda e: [str(p) for p in e.absolute_path])
        details = [field_error(_path("", e), _issue(e)) for e in errors]
        details += [field_error(path, "the NUL character (U+0000) is not allowed") for path in _nul_paths(body)]
        if details:
            raise BadRequest(details=details)
        return body


class AllErrorsParameterValidator(ParameterValidator):
    def validate_request(self, request):
        errors = []
        if self.strict_validation:
            for name in sorted(self.validate_query_parameter_list(request, self.security_query_params)):
                errors.append(field_error(f"query/{name}", "unknown parameter"))
        checks = (("query", self.validate_query_parameter), ("path", self.validate_path_parameter),
                  ("header", self.validate_header_parameter), ("cookie", self.validate_cookie_parameter))
        for location, check in checks:
            for param in self.parameters.get(location, []):
                issue = check(param, request)
                if issue:
                    errors.append(field_error(f"{location}/{param['name']}", issue.splitlines()[0]))
        if errors:
            raise BadRequest(details=errors)


VALIDATOR_MAP = {"body": MediaTypeDict({"*/*json": AllErrorsBodyValidator}), "parameter": AllErrorsParameterValidator}
