//! Motion-JPEG streams: a clip is its JPEG frames back to back (what
//! `ffmpeg -c:v mjpeg -f mjpeg` writes). [`frames`] splits one by walking each frame's
//! marker segments, so a byte pattern inside compressed data never ends a frame early.
//! Every length read from the stream is checked against the bytes that are there.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Most frames a clip may have.
pub const MAX_FRAMES: usize = 100_000;

/// The frames of an MJPEG stream, each from its SOI to its EOI marker.
pub fn frames(stream: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        if out.len() == MAX_FRAMES {
            return Err(format!("more than {MAX_FRAMES} frames"));
        }
        let len = frame_len(&stream[at..]).map_err(|e| format!("frame {} at byte {at}: {e}", out.len()))?;
        out.push(&stream[at..at + len]);
        at += len;
    }
    if out.is_empty() {
        return Err(String::from("empty clip: send a Motion-JPEG stream"));
    }
    Ok(out)
}

/// Bytes of the JPEG at the start of `data`, EOI included.
fn frame_len(data: &[u8]) -> Result<usize, String> {
    if data.get(..2) != Some(&[0xff, 0xd8][..]) {
        return Err(String::from("no SOI marker (not a Motion-JPEG stream)"));
    }
    let mut at = 2;
    loop {
        // A marker: 0xff, optional 0xff fill bytes, the marker code.
        if data.get(at) != Some(&0xff) {
            return Err(format!("expected a marker at byte {at}"));
        }
        while data.get(at) == Some(&0xff) {
            at += 1;
        }
        let code = *data.get(at).ok_or("truncated before a marker code")?;
        at += 1;
        match code {
            0xd9 => return Ok(at),
            0x01 | 0xd0..=0xd7 => continue,
            _ => {}
        }
        let high = *data.get(at).ok_or("truncated segment length")?;
        let low = *data.get(at + 1).ok_or("truncated segment length")?;
        let len = usize::from(u16::from_be_bytes([high, low]));
        if len < 2 || at + len > data.len() {
            return Err(format!("segment of {len} bytes at byte {at} runs past the data"));
        }
        at += len;
        if code == 0xda {
            // Entropy-coded data: runs until a 0xff that is neither a stuffed 0x00 nor a
            // restart marker.
            loop {
                match (data.get(at), data.get(at + 1)) {
                    (Some(0xff), Some(0x00 | 0xd0..=0xd7)) => at += 2,
                    (Some(0xff), Some(_)) => break,
                    (Some(_), _) => at += 1,
                    (None, _) => return Err(String::from("truncated inside compressed data")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: &[u8] = &[
        0xff, 0xd8, // SOI
        0xff, 0xe0, 0x00, 0x04, 0xaa, 0xbb, // APP0 of 2 payload bytes
        0xff, 0xda, 0x00, 0x02, // SOS with an empty header
        0x12, 0xff, 0x00, 0x34, 0xff, 0xd3, 0x56, // data, a stuffed 0xff, a restart marker
        0xff, 0xd9, // EOI
    ];

    #[test]
    fn frames_are_split_at_their_eoi() {
        let clip = [FRAME, FRAME, FRAME].concat();
        let frames = frames(&clip).expect("split");
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| *f == FRAME));
    }

    #[test]
    fn broken_streams_are_errors() {
        assert!(frames(b"").is_err());
        assert!(frames(b"not a clip").is_err());
        for cut in 1..FRAME.len() {
            assert!(frames(&FRAME[..cut]).is_err(), "cut at {cut}");
        }
        let mut junk = FRAME.to_vec();
        junk.push(0);
        assert!(frames(&junk).is_err());
        let mut long = FRAME.to_vec();
        long[5] = 0xff; // the APP0 length now runs past the end
        assert!(frames(&long).is_err());
    }
}
