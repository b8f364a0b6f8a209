//! `video`: a grayscale filter over every frame of a Motion-JPEG clip: decode → gray →
//! encode. It stands in for FunctionBench's `video_processing`, which runs ffmpeg's
//! grayscale filter over an H.264 clip: here the clip is Motion-JPEG (every frame a JPEG),
//! so the codec is the JPEG one the other image functions use.
//!
//! The request is the clip itself (raw bytes: JPEG frames back to back, as
//! `ffmpeg -c:v mjpeg -f mjpeg` writes them). The output clip has the same form; the
//! digest is of all its bytes.

use crate::jpeg::{self, Image};
use crate::mjpeg;
use crate::util::Hasher;
use crate::{Env, Function};
use alloc::format;
use alloc::string::String;
use serde::Serialize;

/// Marker type of the `video` function.
pub struct Video;

/// Response.
#[derive(Serialize)]
pub struct Response {
    /// SHA-256 of the gray clip (all frames, in order).
    pub digest: String,
    /// Frames filtered.
    pub frames: usize,
    /// Width of the first frame.
    pub width: usize,
    /// Height of the first frame.
    pub height: usize,
    /// Bytes of the gray clip.
    pub bytes: usize,
}

/// ITU-R BT.601 luma in 8-bit fixed point (the weights ffmpeg's `format=gray` uses).
fn gray(frame: &Image) -> Image {
    let pixels = if frame.channels == 1 {
        frame.pixels.clone()
    } else {
        frame
            .pixels
            .chunks_exact(3)
            .map(|p| ((77 * u32::from(p[0]) + 150 * u32::from(p[1]) + 29 * u32::from(p[2]) + 128) >> 8) as u8)
            .collect()
    };
    Image { width: frame.width, height: frame.height, channels: 1, pixels }
}

impl Function for Video {
    const NAME: &'static str = "video";
    type State = ();
    type Response = Response;

    fn init(_: &Env) {}

    fn invoke(_: &mut (), request: &[u8]) -> Result<Response, String> {
        let frames = mjpeg::frames(request)?;
        let mut hasher = Hasher::default();
        let (mut bytes, mut size) = (0, (0, 0));
        for (i, frame) in frames.iter().enumerate() {
            let decoded = jpeg::decode(frame).map_err(|e| format!("frame {i}: {e}"))?;
            if i == 0 {
                size = (decoded.width, decoded.height);
            }
            let out = jpeg::encode(&gray(&decoded)).map_err(|e| format!("frame {i}: {e}"))?;
            hasher.bytes(&out);
            bytes += out.len();
        }
        Ok(Response { digest: hasher.finish(), frames: frames.len(), width: size.0, height: size.1, bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_uses_bt601_weights() {
        let frame =
            Image { width: 3, height: 1, channels: 3, pixels: alloc::vec![255, 0, 0, 0, 255, 0, 255, 255, 255] };
        assert_eq!(gray(&frame).pixels, [77, 149, 255]);
    }
}
