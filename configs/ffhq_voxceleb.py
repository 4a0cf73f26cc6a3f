"""TFVGAN: VoxCeleb2 videos and an FFHQ image set, video/image sampling (sigma = 0.5), 256 px.

    python -m tfvgan_jax.main --config=configs/ffhq_voxceleb.py --workdir=DIR \\
        --config.face_model=/data/bfm_3ddfa.npz --config.data.videos=/data/records/voxceleb2_train \\
        --config.data.images=/data/records/ffhq --config.eval.videos=/data/records/voxceleb2_test

With probability sigma a sample is three different images of the image set (t and t-1 the same
image: inter-identity swapping, no temporal loss), else one video clip (TFVGAN §3.2). Everything
else is `configs/voxceleb.py`, whose variants (`:res=128`, `:runlocal`) apply here too.
"""

from configs import voxceleb


def get_config(arg=None):
  config = voxceleb.get_config(arg)
  config.data.sampling = "video_image"
  config.data.sigma = 0.5
  return config
