"""Label parsers on small files in the real formats; bad files name the file and the line."""
import pytest

from flowstore.data.labels import (
    LabelError, read_class_index, read_demo_labels, read_hmdb51, read_mmaction_list, read_ucf101,
)
from flowstore.synthetic import MOTION_CLASSES, make_demo_dataset

UCF_CLASSIND = "1 ApplyEyeMakeup\n2 ApplyLipstick\n3 Archery\n"
UCF_TRAIN = (
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
    "ApplyLipstick/v_ApplyLipstick_g08_c01.avi 2\n"
    "Archery/v_Archery_g08_c01.avi 3\n"
)
UCF_TEST = "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\nArchery/v_Archery_g01_c01.avi\n"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_mmaction_rawframe_and_video_lists(tmp_path):
    f = write(tmp_path / "train_list.txt",
              "# comment\nApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01 120 0\n\nArchery/v_Archery_g01_c01 95 2\n")
    ann = read_mmaction_list(f)
    assert ann.videos == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", "Archery/v_Archery_g01_c01"]
    assert [e.label for e in ann] == [0, 2] and [e.num_frames for e in ann] == [120, 95]
    assert ann.entries[1].where == f"{f}:4"
    videos = read_mmaction_list(write(tmp_path / "v.txt", "some/clip.mp4 3\n"))
    assert videos.entries[0].video == "some/clip.mp4" and videos.entries[0].label == 3
    offsets = read_mmaction_list(write(tmp_path / "o.txt", "clipdir 10 120 4\n"))
    assert offsets.entries[0].num_frames == 120 and offsets.entries[0].label == 4


@pytest.mark.parametrize("text, line, message", [
    ("a 10 0\nc ten 1\n", 2, "total_frames must be an integer"),
    ("a 10 0\nb 10\n", 2, "unknown class 10"),
    ("a 10 0\nb 10 x\n", 2, "label must be an integer"),
    ("a 10 0 1 2 3\n", 1, "expected 'frame_dir total_frames label'"),
    ("a 0 1\n", 1, "total_frames must be positive"),
    ("a 10 -1\n", 1, "negative"),
    ("a 10 0\nb 10 7\n", 2, "unknown class 7"),
])
def test_mmaction_bad_lines_name_file_and_line(tmp_path, text, line, message):
    f = write(tmp_path / "list.txt", text)
    with pytest.raises(LabelError, match=message) as exc:
        read_mmaction_list(f, classes=["a", "b", "c"])
    assert f"{f}:{line}:" in str(exc.value)


def test_ucf101_splits(tmp_path):
    write(tmp_path / "classInd.txt", UCF_CLASSIND)
    write(tmp_path / "trainlist01.txt", UCF_TRAIN)
    write(tmp_path / "testlist01.txt", UCF_TEST)
    train = read_ucf101(tmp_path, 1, "train")
    assert train.classes == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    assert train.labels == {"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01": 0,
                            "ApplyLipstick/v_ApplyLipstick_g08_c01": 1, "Archery/v_Archery_g08_c01": 2}
    test = read_ucf101(tmp_path, 1, "test")
    assert [e.label for e in test] == [0, 2] and {e.split for e in test} == {"test"}


def test_ucf101_errors(tmp_path):
    write(tmp_path / "classInd.txt", UCF_CLASSIND)
    write(tmp_path / "trainlist01.txt", UCF_TRAIN + "Surfing/v_Surfing_g01_c01.avi 4\n")
    with pytest.raises(LabelError, match=r"trainlist01.txt:4: unknown class 'Surfing'"):
        read_ucf101(tmp_path, 1, "train")
    write(tmp_path / "trainlist02.txt", "Archery/v_Archery_g08_c01.avi 1\n")
    with pytest.raises(LabelError, match=r"trainlist02.txt:1: class index 1 does not match folder 'Archery'"):
        read_ucf101(tmp_path, 2, "train")
    write(tmp_path / "trainlist03.txt", "Archery/v_Archery_g08_c01.avi\n")
    with pytest.raises(LabelError, match=r"trainlist03.txt:1: expected"):
        read_ucf101(tmp_path, 3, "train")
    write(tmp_path / "classInd.txt", "1 ApplyEyeMakeup\n3 Archery\n")
    with pytest.raises(LabelError, match=r"classInd.txt:2: class index 3 out of order"):
        read_ucf101(tmp_path, 1, "train")
    write(tmp_path / "classInd.txt", UCF_CLASSIND)
    with pytest.raises(LabelError, match="label file not found: .*testlist09.txt"):
        read_ucf101(tmp_path, 9, "test")


def test_hmdb51_splits(tmp_path):
    write(tmp_path / "brush_hair_test_split1.txt",
          "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \nApril_09_brush_hair_u_nm_np1_ba_goo_1.avi 2 \n"
          "Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi 0 \n")
    write(tmp_path / "cartwheel_test_split1.txt", "Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi 1 \n")
    write(tmp_path / "cartwheel_test_split2.txt", "Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi 2 \n")
    train = read_hmdb51(tmp_path, 1, "train")
    assert train.classes == ["brush_hair", "cartwheel"]
    assert train.labels == {"brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0": 0,
                            "cartwheel/Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8": 1}
    test = read_hmdb51(tmp_path, 1, "test")
    assert test.videos == ["brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_1"]
    assert len(read_hmdb51(tmp_path, 1, None)) == 3  # tag 0 (unused) never returned
    assert read_hmdb51(tmp_path, 2, "test").videos == ["cartwheel/Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8"]


def test_hmdb51_errors(tmp_path):
    f = write(tmp_path / "brush_hair_test_split1.txt", "a.avi 1\nb.avi 3\n")
    with pytest.raises(LabelError, match=r"brush_hair_test_split1.txt:2: expected '<video>.avi <0\|1\|2>'") as exc:
        read_hmdb51(tmp_path, 1)
    assert f"{f}:2" in str(exc.value)
    f.write_text("a.avi 1\n")
    with pytest.raises(LabelError, match="unknown class 'brush_hair'"):
        read_hmdb51(tmp_path, 1, classes=["cartwheel"])
    with pytest.raises(LabelError, match="no '<class>_test_split3.txt' files"):
        read_hmdb51(tmp_path, 3)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), clips_per_class=2, num_frames=3, size=(32, 24),
                             verify=False)


def test_demo_labels_from_make_demo_dataset(demo):
    ann = read_demo_labels(demo.labels_path)
    assert ann.classes == list(MOTION_CLASSES)
    assert len(ann) == 12 and ann.labels == {r["video_id"]: r["label"] for r in demo.read_labels()}
    assert {e.split for e in ann} == {"train", "test"}
    test = read_demo_labels(demo.labels_path, split="test")
    assert 0 < len(test) < 12 and all(e.split == "test" for e in test)
    assert read_class_index(demo.class_index_path) == list(MOTION_CLASSES)


def test_demo_label_errors(demo, tmp_path):
    rows = demo.labels_path.read_text().splitlines()
    bad = tmp_path / "labels.csv"
    (tmp_path / "classInd.txt").write_text(demo.class_index_path.read_text())
    row = rows[3].split(",")
    for fields, message in [
        ([row[0], str((int(row[1]) + 1) % 6), row[2], row[3]], f"does not match label {(int(row[1]) + 1) % 6}"),
        ([row[0], "9", row[2], row[3]], "unknown class 9"),
        ([row[0], row[1], row[2], "val"], "split must be 'train' or 'test'"),
        ([row[0], row[1]], "expected 4 fields"),
    ]:
        bad.write_text("\n".join(rows[:3] + [",".join(fields)] + rows[4:]) + "\n")
        with pytest.raises(LabelError, match=message) as exc:
            read_demo_labels(bad)
        assert f"{bad}:4:" in str(exc.value)
    bad.write_text("video,label\n")
    with pytest.raises(LabelError, match=r"labels.csv:1: expected the header"):
        read_demo_labels(bad)


def test_resolve_against_store_ids(tmp_path):
    f = write(tmp_path / "list.txt",
              "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 0\nv_Archery_g01_c01 2\nmissing/v_Nope 1\n")
    ann = read_mmaction_list(f)
    store_ids = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", "Archery/v_Archery_g01_c01", "other"]
    with pytest.raises(LabelError, match=r"list.txt:3: video 'missing/v_Nope' is not in store x") as exc:
        ann.resolve(store_ids, "store x")
    assert "store ids look like" in str(exc.value)
    ann.entries = ann.entries[:2]
    resolved = ann.resolve(store_ids)
    assert resolved.videos == store_ids[:2]  # extension stripped; unique basename matched
    dup = read_mmaction_list(write(tmp_path / "dup.txt", "other 1 0\nother 1 0\n"))
    with pytest.raises(LabelError, match=r"dup.txt:2: video 'other' is listed twice \(first at .*dup.txt:1\)"):
        dup.resolve(store_ids)
