"""What pip cannot see: the installed environment is the one the pins describe."""

import cv2
import numpy


def test_a_single_opencv_4_10_is_installed():
    # paddlex pins opencv-contrib-python 4.10.0.84; a second OpenCV wheel (e.g. an unpinned
    # headless 5.x) would overwrite parts of the same cv2/ folder and mix versions silently.
    assert cv2.__version__ == "4.10.0"
    assert hasattr(cv2, "ximgproc"), "contrib modules missing: another OpenCV wheel shadows cv2"


def test_numpy_is_1_x_for_the_triton_python_stub():
    assert numpy.__version__.startswith("1.26.")


def test_post_install_check_is_clean():
    from deploy.embedded.check import problems

    assert problems() == []
