"""Request validation that reports every problem at once, and the checks Connexion leaves out.

Connexion stops at the first schema error; clients fixing a form want all of them. Beyond the schema: a body's
nesting depth, text PostgreSQL cannot store (U+0000, lone UTF-16 surrogates), the contract's `x-max-depth` and
`x-max-bytes` on free-form objects, and `pattern` with the meaning the contract's regex dialect gives it.
"""

import copy
import json
import re
import uuid

from connexion.datastructures import MediaTypeDict
from connexion.json_schema import Draft4RequestValidator
from connexion.validators import JSONRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator, ValidationError, validators

from db.errors import field_error
from tiris.errors import BadRequest

# Deeper than any body the contract describes (`info` is limited to far less by its `x-max-depth`); checked
# without recursion before anything recursive (the JSON Schema validator, the database driver) sees the body.
MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def _ecma_pattern(validator, pattern, instance, schema):
    """OpenAPI patterns are ECMA-262 regexes, where `$` matches only at the end; in Python it also matches before
    a final newline, which let `"2\\n"` pass as a decimal. `\\Z` is the ECMA `$` in Python."""
    if isinstance(instance, str) and not re.search(re.sub(r"(?<!\\)\$", r"\\Z", pattern), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _max_depth(validator, limit, instance, schema):
    if _depth(instance) > limit:
        yield ValidationError(f"is nested more than {limit} levels deep")


def _max_bytes(validator, limit, instance, schema):
    if len(json.dumps(instance, ensure_ascii=False).encode(errors="surrogatepass")) > limit:  # surrogates: a 400 later
        yield ValidationError(f"is larger than {limit} bytes as JSON")


RequestValidator = validators.extend(Draft4RequestValidator, {
    "pattern": _ecma_pattern, "x-max-depth": _max_depth, "x-max-bytes": _max_bytes})
ParameterSchemaValidator = validators.extend(Draft4Validator, {"pattern": _ecma_pattern})


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


def _depth(value) -> int:
    """How deeply arrays and objects nest in `value` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _text_issues(body) -> list[dict]:
    """Strings (keys included) PostgreSQL cannot store: U+0000 in text or jsonb, and lone UTF-16 surrogates
    (`"\\ud800"`), which JSON can spell but UTF-8 cannot encode."""
    issues, stack = [], [(body, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                child = f"{path}/{key}".lstrip("/")
                stack.append((key, child))
                stack.append((value, child))
        elif isinstance(node, list):
            stack.extend((value, f"{path}/{i}".lstrip("/")) for i, value in enumerate(node))
        elif isinstance(node, str):
            if "\x00" in node:
                issues.append(field_error(path or "$", "the NUL character (U+0000) is not allowed"))
            if _SURROGATE.search(node):
                issues.append(field_error(path or "$", "a lone UTF-16 surrogate is not valid Unicode text"))
    return sorted({(i["field"], i["issue"]): i for i in issues}.values(), key=lambda i: i["field"])


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
        "maxProperties": lambda: f"must have at most {schema_value} field(s)",
        "x-max-depth": lambda: f"must not nest more than {schema_value} levels deep",
        "x-max-bytes": lambda: f"must be at most {schema_value} bytes as JSON",
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
    @property
    def _validator(self):
        return RequestValidator(self._schema, format_checker=Draft4Validator.FORMAT_CHECKER)

    async def _parse(self, stream, scope):
        raw = b"".join([chunk async for chunk in stream])
        if not raw:
            return _ABSENT
        too_deep = BadRequest(f"The request body nests more than {MAX_DEPTH} levels deep.", code="MALFORMED_BODY")
        try:
            body = json.loads(raw.decode(self._encoding))
        except UnicodeDecodeError:
            raise BadRequest("The request body is not valid UTF-8.", code="MALFORMED_BODY") from None
        except json.JSONDecodeError as error:
            raise BadRequest(f"The request body is not valid JSON: {error.msg}.", code="MALFORMED_BODY") from None
        except RecursionError:  # the parser recurses once per level: about a thousand levels overflow it
            raise too_deep from None
        if _depth(body) > MAX_DEPTH:
            raise too_deep
        return body

    def _validate(self, body):
        if body is _ABSENT:  # fine only where the contract makes the body optional
            if self._required:
                raise BadRequest("A JSON request body is required.", details=[field_error("$", "missing")])
            return None
        errors = [leaf for error in self._validator.iter_errors(body) for leaf in _leaf_errors(error)]
        errors.sort(key=lambda e: [str(p) for p in e.absolute_path])
        details = [field_error(_path("", e), _issue(e)) for e in errors]
        details += _text_issues(body)
        if details:
            raise BadRequest(details=details)
        return body


class AllErrorsParameterValidator(ParameterValidator):
    @staticmethod
    def validate_parameter(parameter_type, value, param, param_name=None):
        if value is None:
            return ParameterValidator.validate_parameter(parameter_type, value, param, param_name)
        schema = copy.deepcopy(param).get("schema", param)
        try:
            ParameterSchemaValidator(schema, format_checker=Draft4Validator.FORMAT_CHECKER).validate(value)
        except ValidationError as error:
            return str(error)
        return None

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
