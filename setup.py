"""stjax: unsupervised spatiotemporal representation learning in JAX."""
from setuptools import find_packages, setup

JAX_STACK = [
    "jax>=0.4.30",
    "flax>=0.8",
    "optax>=0.2",
    "orbax-checkpoint>=0.6",
    "etils[epath]",  # epath: the file-system paths stjax.train.checkpoint measures and moves (Orbax uses it too)
    "chex>=0.1.86",
    "ml-collections>=0.1.1",
    "safetensors>=0.4",  # the safetensors export format (numpy API; no torch needed)
    "dm-pix>=0.4",  # adjust_hue for the augmentation on the accelerator (stjax.data.device_augment)
    "numpy",
    "filelock",  # jax's persistent compilation cache evicts old entries under a file lock (stjax.main)
]
DATA_STACK = [
    "tensorflow-cpu>=2.16; platform_machine=='x86_64'",
    "tensorflow>=2.16; platform_machine!='x86_64'",
    "tensorflow-datasets>=4.9.4",
    "av>=12",
    "pillow",
    "tqdm",
    "importlib_resources",  # needed by tensorflow-datasets at import, not declared by it
    "matplotlib",
    "absl-py",
    "tensorboard",  # tf.summary needs it; tensorflow-cpu does not bring it
]

setup(
    name="stjax",
    version="0.1.0",
    description="Unsupervised spatiotemporal representation learning (rho-SimCLR/MoCo/BYOL/SwAV) in JAX",
    packages=find_packages(include=["stjax", "stjax.*"]),
    python_requires=">=3.10",
    install_requires=JAX_STACK + DATA_STACK,
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3", "scikit-learn"],  # parallel workers (pytest.ini); sklearn: metrics reference
        "torch": ["torch", "torchvision"],  # PyTorch export formats and the parity tests
        "beam": ["apache-beam>=2.50"],  # dataset builds on a Beam runner (python -m stjax.data.build --beam_runner)
    },
)
