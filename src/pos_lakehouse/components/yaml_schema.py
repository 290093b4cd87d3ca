"""The JSON schema `dg` validates a component's YAML against, made to name the field that is wrong."""

from typing import Any


def _without_template_strings(node: Any) -> Any:
    """Drop the template-string alternative Dagster offers next to each nested model.

    With `anyOf: [model, string]` a typo deep inside (`channel: landng`) is reported only as
    "is not valid under any of the given schemas"; against the model alone, `dg check defs`
    names the field and lists the allowed values. The YAML never uses templates for these blocks.
    """
    if isinstance(node, dict):
        alternatives = node.get("anyOf")
        if isinstance(alternatives, list) and any("$ref" in a for a in alternatives if isinstance(a, dict)):
            kept = [a for a in alternatives if a != {"type": "string"}]
            node = {k: v for k, v in node.items() if k != "anyOf"}
            if len(kept) == 1:
                node.update(kept[0])
            else:
                node["anyOf"] = kept
        return {k: _without_template_strings(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_without_template_strings(v) for v in node]
    return node


_MODELS: dict[tuple[type, type], type] = {}


def yaml_schema_model(model: type | None, component: type) -> type | None:
    """`model` (a component's YAML model) with a JSON schema that validates nested blocks directly
    and keeps each attribute's description (parsing is unchanged).

    Dagster derives the YAML model from the component's fields and, for a field with a default,
    replaces its `Field(description=...)` with one without; `dg` would then show no help for it.
    """
    if model is None:  # a component without YAML attributes
        return None
    if (model, component) not in _MODELS:

        class Strict(model):  # type: ignore[misc, valid-type]
            @classmethod
            def model_json_schema(cls, *args, **kwargs):
                schema: dict = _without_template_strings(super().model_json_schema(*args, **kwargs))
                for name, prop in schema.get("properties", {}).items():
                    field = component.model_fields.get(name)
                    if field is not None and field.description and "description" not in prop:
                        prop["description"] = field.description
                return schema

        Strict.__name__ = Strict.__qualname__ = model.__name__
        _MODELS[(model, component)] = Strict
    return _MODELS[(model, component)]


# Jinja's default delimiters: a string without them renders to itself.
_TEMPLATE_MARKERS = ("{{", "{%", "{#")


def uses_templates(value) -> bool:
    """Whether a YAML value holds a Jinja template string (nested dicts and lists searched)."""
    if isinstance(value, str):
        return any(m in value for m in _TEMPLATE_MARKERS)
    if isinstance(value, dict):
        return any(uses_templates(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(uses_templates(v) for v in value)
    return False


class TakenAsWritten:
    """Mixin for a resolvable component (listed before `dg.Component`): YAML attributes without
    templates are taken as written.

    Dagster renders every string of a resolvable component's attributes as a Jinja template
    (`ResolutionContext.resolve_value`), compiling each one: some thirty per retailer file, most of
    a component's load time at 200 retailers. A string without template delimiters renders to
    itself, so when no string uses them the component is built from the validated attributes
    directly -- the fields the file sets, as Dagster passes them, so defaults apply as they would
    (nested models Dagster does not render either). A file that uses a template is resolved by
    Dagster as before.
    """

    @classmethod
    def load(cls, attributes, context):
        if attributes is not None:
            fields = {name: getattr(attributes, name) for name in attributes.model_fields_set}
            if not uses_templates(fields):
                return cls(**fields)
        # The mixin is listed before `dg.Component`, whose `load` this is (checkers see only `object`).
        return super().load(attributes, context)  # pyright: ignore[reportAttributeAccessIssue]
