"""Every function the program deploys points at a handler that exists in the archive it ships."""

import importlib


def test_every_deployed_handler_is_a_callable_in_the_functions_archive(dev_graph):
    functions = dev_graph.of_type("aws:lambda/function:Function")
    assert len(functions) >= 7
    for function in functions:
        module_name, _, attribute = function.inputs["handler"].rpartition(".")
        assert module_name.replace(".", "/") + ".py" in function.inputs["code"].assets, function.name
        handler = getattr(importlib.import_module(module_name), attribute, None)
        assert callable(handler), f"{function.name}: {function.inputs['handler']} is not a callable"
