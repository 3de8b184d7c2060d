"""Request validation that reports every problem at once, and format checks Connexion leaves out.

Connexion stops at the first schema error; clients fixing a form want all of them.
"""

import json
import uuid

from connexion.datastructures import MediaTypeDict
from connexion.validators import JSONRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator

from tiris.errors import BadRequest, field_error


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


def _issue(error) -> str:
    if error.validator == "not" and error.schema.get("format") == "decimal":
        return f"{error.instance!r} must be greater than 0"  # PositiveDecimal's `not: {pattern: zero}`
    return error.message


class AllErrorsBodyValidator(JSONRequestBodyValidator):
    async def _parse(self, stream, scope):
        raw = b"".join([chunk async for chunk in stream])
        if not raw:
            return None
        try:
            return json.loads(raw.decode(self._encoding))
        except UnicodeDecodeError:
            raise BadRequest("The request body is not valid UTF-8.", code="MALFORMED_BODY") from None
        except json.JSONDecodeError as error:
            raise BadRequest(f"The request body is not valid JSON: {error.msg}.", code="MALFORMED_BODY") from None

    def _validate(self, body):
        if not self._nullable and body is None:
            raise BadRequest("A JSON request body is required.", details=[field_error("$", "missing")])
        errors = sorted(self._validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path])
        if errors:
            raise BadRequest(details=[field_error(_path("", e), _issue(e)) for e in errors])
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
