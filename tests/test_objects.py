from captioning.metrics.objects import named_objects, object_f1

OBJECTS = {
    0: [{"colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "square"}],
    1: [{"colour": "red", "shape": "cross"}, {"colour": "red", "shape": "cross"}],
}


def test_named_objects_reads_counts_and_sizes() -> None:
    tokens = "there are two small red crosses and a large blue circle".split()
    found = named_objects(tokens, {"red", "blue"}, {"cross", "circle"})
    assert found == {("red", "cross"): 2, ("blue", "circle"): 1}


def test_object_f1_micro_average() -> None:
    predictions = {0: "a red circle to the left of a green square", 1: "two red crosses"}
    scores = object_f1(predictions, OBJECTS)
    # named: red circle (hit), green square (miss; green is no colour of the data), 2 red crosses (hits)
    assert scores["object_precision"] == 1.0  # "green" is not an annotated colour: not counted
    assert scores["object_recall"] == 3 / 4
    assert abs(scores["object_F1"] - 2 * 0.75 / 1.75) < 1e-12
    wrong = object_f1({0: "a blue circle and a red square", 1: "a red cross"}, OBJECTS)
    assert wrong["object_precision"] == 1 / 3 and wrong["object_recall"] == 1 / 4
