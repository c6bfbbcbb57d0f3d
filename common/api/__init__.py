"""The foundation every DRF API of the project stands on: the base view (``views.BaseApi``), the one error shape and
the exception handler that gives it (``exception_handlers``), the schema's error responses (``errors``), an app's
schema decorators with its tags and refusals filled in (``schema.ApiSchema``) and the paging helpers
(``pagination``). The OpenAI-compatible ``/v1`` views keep OpenAI's own error shape."""
