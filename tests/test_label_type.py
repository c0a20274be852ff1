"""The label type a dataset declares (stjax.data.builders.label_type)."""
import pytest

from stjax.data import builders


def test_every_registered_builder_declares_a_valid_label_type():
    assert builders.LABEL_TYPES == ("single", "multi_hot", "boxes", "per_frame")
    for name, cls in builders.BUILDERS.items():
        assert builders.label_type(cls) in builders.LABEL_TYPES, name
    assert builders.label_type(builders.Synthetic) == "single"
    assert builders.label_type("synthetic") == builders.label_type("ucf101/fold2") == "single"
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        builders.label_type("nope")


def test_a_prepared_dataset_has_its_builders_label_type(tiny_video_dataset):
    data_dir, _ = tiny_video_dataset
    assert builders.label_type(builders.load_builder("video_folder/tiny", data_dir)) == "single"


def test_an_invalid_declaration_names_the_builder_and_the_choices():
    class Odd(builders.VideoDatasetBuilder, skip_registration=True):
        LABEL_TYPE = "bags"

    with pytest.raises(ValueError, match=r"Odd.LABEL_TYPE='bags' is invalid; valid choices: single, multi_hot"):
        builders.label_type(Odd)


def test_targets_store_and_batch_each_carried_type():
    import numpy as np
    import tensorflow as tf

    from stjax.data import targets

    assert targets.stored_kind(targets.feature("single", ["a", "b"])) == "single"
    multi = targets.feature("multi_hot", ["a", "b", "c"])
    assert targets.stored_kind(multi) == "multi_hot" and targets.class_names(multi) == ("a", "b", "c")
    assert targets.stored_value("single", None) == -1 and targets.stored_value("single", "b") == "b"
    assert targets.stored_value("multi_hot", ("c", "a", "c")) == ["a", "c"]
    assert targets.stored_value("multi_hot", None) == []
    with pytest.raises(ValueError, match="x.csv:3: a multi_hot label is a sequence of class names"):
        targets.stored_value("multi_hot", "a;b", "x.csv:3")
    assert targets.unknown_classes("multi_hot", ("a", "z", "y"), {"a", "b"}) == ["z", "y"]
    assert targets.unknown_classes("single", "q", {"a"}) == ["q"]
    assert targets.unknown_classes("single", None, {"a"}) == []
    np.testing.assert_array_equal(targets.batch_label("multi_hot", tf.constant([2, 0, 2], tf.int64), 4), [1, 0, 1, 0])
    np.testing.assert_array_equal(targets.batch_label("multi_hot", tf.zeros([0], tf.int64), 3), [0, 0, 0])
    np.testing.assert_array_equal(targets.padding_label("multi_hot", 3), [-1, -1, -1])
    assert int(targets.batch_label("single", tf.constant(2, tf.int64), 4)) == 2
    assert int(targets.padding_label("single", 4)) == -1
    assert targets.label_text(np.array([0, 1, 1]), ["a", "b", "c"]) == "b+c"
    assert targets.label_text(2, ["a", "b", "c"]) == "c"
    assert targets.label_text(np.zeros(3), ["a", "b", "c"]) == "(none)"
    with pytest.raises(ValueError, match="'per_frame' cannot be stored yet; types the pipeline carries: single, "
                                         "multi_hot, boxes"):
        targets.feature("per_frame", ["a"])


def test_boxes_labels_are_per_box_class_ids():
    import numpy as np
    import tensorflow as tf

    from stjax.data import targets

    boxes = targets.feature("boxes", ["a", "b", "c"])
    assert targets.stored_kind(boxes) == "boxes" and targets.class_names(boxes) == ("a", "b", "c")
    assert targets.stored_value("boxes", (("c", "a", "c"), ("b",))) == [["a", "c"], ["b"]]
    assert targets.stored_value("boxes", ()) == []
    assert targets.unknown_classes("boxes", (("a", "z"), ("q",)), {"a", "b"}) == ["z", "q"]
    got = targets.box_labels(tf.ragged.constant([[2, 0], [1], []], dtype=tf.int64), 4).numpy()
    np.testing.assert_array_equal(got, [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    empty = targets.box_labels(tf.ragged.constant([], ragged_rank=1, dtype=tf.int64), 4).numpy()
    assert empty.shape == (0, 4)
    with pytest.raises(ValueError, match="label type 'boxes' .* is batched by the detection pipeline"):
        targets.batch_label("boxes", tf.ragged.constant([[1]]), 4)
