"""emodarts-tf: differentiable architecture search for speech emotion recognition (Keras 3 / TensorFlow)."""
from pathlib import Path

from setuptools import find_packages, setup

# The stack that installs and runs together (Python 3.11). tensorflow-io 0.37.1 loads its ops only
# with TensorFlow 2.16.x, so TensorFlow is pinned to that minor release.
INSTALL_REQUIRES = [
    "tensorflow==2.16.2",
    "tensorflow-io==0.37.1",
    "keras==3.15.1",
    "keras-tuner==1.4.7",
    "librosa==0.11.0",
    "numpy==1.26.4",
    "soundfile>=0.12,<0.15",
    "pyyaml>=6.0,<7",
    "tqdm>=4.66,<5",
    "matplotlib>=3.8,<4",
    # openSMILE low-level descriptors, the default frame-level features of EmotionNAS's second stream
    # (emodarts_tf/data/frame_features.py). opensmile pulls in pandas and pyarrow (through audinterface and
    # audformat); these bounds keep them on the releases that install and run with numpy 1.26 above
    # (installed and tested: pandas 2.2.3, pyarrow 19.0.1).
    "opensmile==2.5.1",
    "pandas>=2.2,<2.3",
    "pyarrow>=16,<20",
]

setup(
    name="emodarts-tf",
    version="0.1.0",
    description="emoDARTS in Keras 3 / TensorFlow: DARTS-searched CNN + sequential models for speech emotion recognition",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["emodarts_tf", "emodarts_tf.*"]),
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # CUDA wheels of the same TensorFlow release (Linux x86-64).
        "gpu": ["tensorflow[and-cuda]==2.16.2"],
        "test": ["pytest>=8,<10", "pytest-timeout>=2.3,<3", "pytest-xdist>=3.6,<4"],
    },
    entry_points={
        "console_scripts": [
            "emodarts-prepare=emodarts_tf.commands.prepare:main",
            "emodarts-search=emodarts_tf.commands.search:main",
            "emodarts-train=emodarts_tf.commands.train:main",
            "emodarts-evaluate=emodarts_tf.commands.evaluate:main",
            "emodarts-export=emodarts_tf.commands.export:main",
            "emodarts-baseline=emodarts_tf.commands.baseline:main",
            "emodarts-compare=emodarts_tf.commands.compare:main",
            "emodarts-predict=emodarts_tf.commands.predict:main",
        ]
    },
)
