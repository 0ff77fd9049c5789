"""In-graph MFCCs or log-mel maps (tf.signal) that reproduce the librosa features of ``emodarts_tf.data.features``.

The waveform signature of an exported model computes its features with this layer, so that a client
sends raw audio and needs no librosa. Every step mirrors librosa 0.11 at its defaults:

1. resample the input rate (16 kHz) to the feature rate: exact band-limited FFT resampling
   (``rfft``, keep or zero-fill the bins below the lower Nyquist frequency, ``irfft``), the same
   operation as ``scipy.signal.resample`` / librosa ``res_type="fft"``;
2. pad with zeros at the end or cut to ``round(duration_s * sample_rate)`` samples;
3. ``stft(center=True, pad_mode="constant")``: ``n_fft // 2`` zeros on each side, periodic Hann window,
   frames of ``n_fft`` every ``hop_length`` samples;
4. power spectrogram ``|X| ** 2`` times librosa's mel filterbank (``librosa.filters.mel``: Slaney mel
   scale and Slaney area normalisation), computed once when the layer is built and embedded as a constant;
5. ``power_to_db(ref=1.0, amin=1e-10, top_db=80.0)``, the ``top_db`` floor taken per utterance;
6. DCT-II with orthonormal scaling over the mel axis, the first ``n_mfcc`` coefficients (``kind="mfcc"``;
   ``kind="logmel"`` keeps the ``n_mels`` log-mel energies of step 5);
7. max-pool over time by ``time_pool``, dropping the frames that do not fill a window.

The output has the model's input layout ``(batch, rows, frames, 1)``: ``rows`` is ``n_mfcc`` or ``n_mels``.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

_FEATURE_KEYS = ("kind", "sample_rate", "duration_s", "n_mfcc", "n_fft", "hop_length", "n_mels", "fmin", "fmax",
                 "time_pool")
KINDS = ("mfcc", "logmel")


def target_samples(sample_rate: int, duration_s: float) -> int:
    """Samples of a padded/cut utterance at ``sample_rate`` (the rule of ``data.features.load_audio``)."""
    return int(round(float(duration_s) * int(sample_rate)))


def mfcc_frames(samples: int, hop_length: int, time_pool: int) -> int:
    """Frames after ``stft(center=True)`` and max-pooling by ``time_pool`` (remainder frames dropped)."""
    return (1 + samples // hop_length) // time_pool


@keras.saving.register_keras_serializable(package="emodarts_tf")
class WaveformMFCC(keras.layers.Layer):
    """Raw mono waveforms -> the pooled MFCC (or log-mel) maps the models are trained on.

    Args:
        kind: ``"mfcc"`` (``data.features.extract_mfcc``) or ``"logmel"`` (the log-mel energies the MFCCs are
            the DCT of, ``features.kind: logmel``; ``n_mfcc`` is then not read).
        sample_rate: feature sample rate (Hz) the librosa features were computed at.
        duration_s: utterance length after padding/cutting, in seconds.
        n_mfcc, n_fft, hop_length, n_mels, fmin, fmax, time_pool: as in ``FeatureConfig``.
        input_rate: sample rate of the waveforms this layer receives (16000 for the serving signature).

    Call arguments:
        waveform: float32 tensor ``(batch, samples)`` at ``input_rate``, samples in [-1, 1];
            any length (cut or zero-padded to ``duration_s``).

    Returns:
        float32 tensor ``(batch, rows, frames, 1)`` of un-normalised MFCCs (``rows = n_mfcc``) or log-mel
        energies in dB (``rows = n_mels``).

    Example:

    >>> layer = WaveformMFCC(sample_rate=16000, duration_s=2.0, n_mfcc=32, n_fft=512,
    ...                      hop_length=256, n_mels=40, time_pool=4)
    >>> layer(np.zeros((2, 16000), "float32")).shape
    TensorShape([2, 32, 31, 1])
    """

    def __init__(
        self,
        sample_rate: int = 32750,
        duration_s: float = 8.0,
        n_mfcc: int = 128,
        n_fft: int = 2048,
        hop_length: int = 512,
        n_mels: int = 128,
        fmin: float = 0.0,
        fmax: float | None = None,
        time_pool: int = 4,
        input_rate: int = 16000,
        kind: str = "mfcc",
        **kwargs,
    ):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise ValueError(f"WaveformMFCC: kind expected one of {list(KINDS)}, received {kind!r}")
        for name, value in (
            ("sample_rate", sample_rate),
            ("n_mfcc", 1 if kind == "logmel" else n_mfcc),  # not read by a log-mel layer
            ("n_fft", n_fft),
            ("hop_length", hop_length),
            ("n_mels", n_mels),
            ("time_pool", time_pool),
            ("input_rate", input_rate),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"WaveformMFCC: {name} expected a positive integer, received {value!r}")
        if not duration_s or float(duration_s) <= 0:
            raise ValueError(f"WaveformMFCC: duration_s expected > 0, received {duration_s!r}")
        if kind == "mfcc" and n_mfcc > n_mels:
            raise ValueError(f"WaveformMFCC: n_mfcc ({n_mfcc}) cannot exceed n_mels ({n_mels})")
        self.kind = kind
        self.sample_rate = int(sample_rate)
        self.duration_s = float(duration_s)
        self.n_mfcc = n_mfcc if kind == "logmel" else int(n_mfcc)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.fmin = float(fmin)
        self.fmax = None if fmax is None else float(fmax)
        self.time_pool = int(time_pool)
        self.input_rate = int(input_rate)
        self.rows = self.n_mels if kind == "logmel" else self.n_mfcc  # the map's height

        self.samples = target_samples(self.sample_rate, self.duration_s)
        self.frames = mfcc_frames(self.samples, self.hop_length, self.time_pool)
        if self.frames < 1:
            raise ValueError(
                f"WaveformMFCC: {self.samples} samples give fewer than time_pool={self.time_pool} STFT frames"
            )
        # Input samples that cover the duration once resampled (a few extra so the FFT resampler's
        # wrap-around at the end falls outside the kept part).
        if self.input_rate == self.sample_rate:
            self.input_samples = self.samples
        else:
            self.input_samples = int(math.ceil(self.samples * self.input_rate / self.sample_rate)) + 2 * (
                self.input_rate // 100
            )
        self.resampled_samples = int(round(self.input_samples * self.sample_rate / self.input_rate))

        import librosa  # export time only; the SavedModel embeds the matrix as a constant

        mel = librosa.filters.mel(
            sr=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels, fmin=self.fmin, fmax=self.fmax
        )
        self._mel_t = np.ascontiguousarray(mel.T.astype(np.float32))  # (n_fft // 2 + 1, n_mels)

    @property
    def feature_config(self) -> dict:
        return {k: getattr(self, k) for k in _FEATURE_KEYS}

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.rows, self.frames, 1)

    def _fit_length(self, x, length: int):
        """Cut ``x`` (batch, n) to ``length`` samples or pad it with zeros at the end."""
        x = x[:, :length]
        missing = length - tf.shape(x)[1]
        x = tf.pad(x, [[0, 0], [0, missing]])
        return tf.ensure_shape(x, [None, length])

    def _resample(self, x):
        """Band-limited FFT resampling of (batch, input_samples) to (batch, resampled_samples)."""
        n_in, n_out = self.input_samples, self.resampled_samples
        spectrum = tf.signal.rfft(x, fft_length=[n_in])
        bins_out = n_out // 2 + 1
        bins_in = n_in // 2 + 1
        if bins_out <= bins_in:
            spectrum = spectrum[:, :bins_out]
        else:
            spectrum = tf.pad(spectrum, [[0, 0], [0, bins_out - bins_in]])
        y = tf.signal.irfft(spectrum, fft_length=[n_out])
        return y * (n_out / n_in)

    def call(self, waveform):
        x = tf.convert_to_tensor(waveform)
        if x.dtype != tf.float32:
            x = tf.cast(x, tf.float32)
        if self.input_rate != self.sample_rate:
            x = self._fit_length(x, self.input_samples)
            x = self._resample(x)
        x = self._fit_length(x, self.samples)

        half = self.n_fft // 2
        x = tf.pad(x, [[0, 0], [half, half]])  # librosa center=True, pad_mode="constant"
        stft = tf.signal.stft(
            x,
            frame_length=self.n_fft,
            frame_step=self.hop_length,
            fft_length=self.n_fft,
            window_fn=_periodic_hann,
            pad_end=False,
        )
        power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))
        mel = tf.matmul(power, tf.constant(self._mel_t))  # (batch, stft_frames, n_mels)
        log_mel = (10.0 / math.log(10.0)) * tf.math.log(tf.maximum(mel, 1e-10))  # ref = 1.0
        log_mel = tf.maximum(log_mel, tf.reduce_max(log_mel, axis=[1, 2], keepdims=True) - 80.0)
        if self.kind == "logmel":
            rows = log_mel
        else:
            rows = tf.signal.dct(log_mel, type=2, norm="ortho")[:, :, : self.n_mfcc]  # (batch, frames, n_mfcc)

        pooled_frames = self.frames * self.time_pool
        rows = rows[:, :pooled_frames, :]
        rows = tf.reshape(rows, [-1, self.frames, self.time_pool, self.rows])
        rows = tf.reduce_max(rows, axis=2)  # (batch, frames, rows)
        return tf.transpose(rows, [0, 2, 1])[..., tf.newaxis]

    def get_config(self):
        config = super().get_config()
        config.update(self.feature_config)
        config["input_rate"] = self.input_rate
        return config


def _periodic_hann(length, dtype=tf.float32):
    # librosa/scipy ``get_window("hann", n_fft, fftbins=True)`` is the periodic Hann window.
    return tf.signal.hann_window(length, periodic=True, dtype=dtype)
