from fer_core import labels


def test_canonical_order():
    assert labels.CLASS_NAMES_7 == ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
    assert labels.CLASS_NAMES_8[-1] == "contempt"


def test_every_format_maps_onto_canonical_names():
    canon = set(labels.CLASS_NAMES_8)
    for table in (labels.RAFDB_CODES, labels.AFFECTNET_CODES, labels.FER2013_CODES, labels.FERPLUS_CODES,
                  labels.FOLDER_ALIASES):
        assert set(table.values()) <= canon
    # Each 7-class format covers the 7 canonical classes exactly once.
    for table in (labels.RAFDB_CODES, labels.FER2013_CODES):
        assert sorted(table.values()) == sorted(labels.CLASS_NAMES_7)
    assert sorted(labels.AFFECTNET_CODES.values()) == sorted(labels.CLASS_NAMES_8)


def test_rafdb_codes_follow_the_official_list():
    # RAF-DB basic README: 1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness, 6 Anger, 7 Neutral.
    assert [labels.RAFDB_CODES[i] for i in range(1, 8)] == [
        "surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"]
