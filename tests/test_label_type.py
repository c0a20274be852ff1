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
