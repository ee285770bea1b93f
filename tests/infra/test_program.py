"""The program under mocks with the sample stack: the pipeline is there and wired."""

def test_smoke(dev_graph):
    for r in dev_graph.resources:
        print(r.type, r.name)
    assert dev_graph.resources
