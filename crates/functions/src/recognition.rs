//! `recognition`: classify an image with a ResNet-18-style network (FunctionBench's
//! PyTorch ResNet image recognition).
//!
//! Init creates the network's weights from a fixed seed: 11.7 M parameters, ≈ 45 MiB of
//! `f32` that stay in memory. Every invocation reads all of them once (a read-mostly
//! working set of the kind the restore strategies are built for) and computes
//! ≈ 0.14 G multiply-adds on a generated 3 × 32 × 32 image.

use crate::util::{digest, rng, signed_unit, Rng};
use crate::Function;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Marker type of the `recognition` function.
pub struct Recognition;

/// Classes the network scores.
pub const CLASSES: usize = 1000;
const IMAGE: usize = 32;
const STAGES: [usize; 4] = [64, 128, 256, 512];
const BLOCKS_PER_STAGE: usize = 2;

/// Request: `{"seed": n}` picks the generated image.
#[derive(Deserialize)]
pub struct Request {
    /// Seed of the image.
    pub seed: u64,
}

/// Response.
#[derive(Serialize)]
pub struct Response {
    /// SHA-256 of the logits (little-endian `f32`).
    pub digest: String,
    /// The five most likely classes with their probabilities.
    pub top5: Vec<(usize, f32)>,
}

struct Conv {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

struct Tensor {
    c: usize,
    h: usize,
    w: usize,
    data: Vec<f32>,
}

impl Conv {
    fn new(rng: &mut Rng, cin: usize, cout: usize, k: usize, stride: usize, gain: f32) -> Self {
        // He-uniform initialisation keeps activations in range without batch norm.
        let scale = gain * libm::sqrtf(6.0 / (cin * k * k) as f32);
        let weights = (0..cout * cin * k * k).map(|_| signed_unit(rng) * scale).collect();
        let bias = (0..cout).map(|_| signed_unit(rng) * 0.01).collect();
        Conv { cin, cout, k, stride, weights, bias }
    }

    fn parameters(&self) -> usize {
        self.weights.len() + self.bias.len()
    }

    /// Convolution with `k / 2` zero padding.
    fn forward(&self, x: &Tensor) -> Tensor {
        debug_assert_eq!(x.c, self.cin);
        let pad = self.k / 2;
        let (h, w, s) = (x.h, x.w, self.stride);
        let oh = (h + 2 * pad - self.k) / s + 1;
        let ow = (w + 2 * pad - self.k) / s + 1;
        let mut out = vec![0.0f32; self.cout * oh * ow];
        for (co, plane) in out.chunks_exact_mut(oh * ow).enumerate() {
            plane.fill(self.bias[co]);
            for ci in 0..self.cin {
                let input = &x.data[ci * h * w..(ci + 1) * h * w];
                let kernel = &self.weights[(co * self.cin + ci) * self.k * self.k..][..self.k * self.k];
                for ky in 0..self.k {
                    for kx in 0..self.k {
                        let wv = kernel[ky * self.k + kx];
                        // Output columns whose input column `ox*s + kx - pad` is inside the image.
                        let x_lo = (pad.saturating_sub(kx)).div_ceil(s);
                        let x_hi = ((w + pad - kx - 1) / s + 1).min(ow);
                        for oy in 0..oh {
                            let iy = oy * s + ky;
                            if iy < pad || iy - pad >= h {
                                continue;
                            }
                            let row = &input[(iy - pad) * w..][..w];
                            let orow = &mut plane[oy * ow..][..ow];
                            if s == 1 {
                                let shift = x_lo + kx - pad;
                                for (o, i) in orow[x_lo..x_hi].iter_mut().zip(&row[shift..]) {
                                    *o += wv * i;
                                }
                            } else {
                                for (ox, o) in orow.iter_mut().enumerate().take(x_hi).skip(x_lo) {
                                    *o += wv * row[ox * s + kx - pad];
                                }
                            }
                        }
                    }
                }
            }
        }
        Tensor { c: self.cout, h: oh, w: ow, data: out }
    }
}

fn relu(t: &mut Tensor) {
    for v in &mut t.data {
        *v = v.max(0.0);
    }
}

struct Block {
    conv1: Conv,
    conv2: Conv,
    shortcut: Option<Conv>,
}

impl Block {
    fn forward(&self, x: Tensor) -> Tensor {
        let mut y = self.conv1.forward(&x);
        relu(&mut y);
        let mut y = self.conv2.forward(&y);
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(&x),
            None => x,
        };
        for (a, b) in y.data.iter_mut().zip(&skip.data) {
            *a += b;
        }
        relu(&mut y);
        y
    }
}

/// The network built by init.
pub struct State {
    stem: Conv,
    blocks: Vec<Block>,
    fc_weights: Vec<f32>,
    fc_bias: Vec<f32>,
}

impl State {
    /// Number of parameters (weights and biases).
    pub fn parameters(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| b.conv1.parameters() + b.conv2.parameters() + b.shortcut.as_ref().map_or(0, Conv::parameters))
            .sum();
        self.stem.parameters() + blocks + self.fc_weights.len() + self.fc_bias.len()
    }

    fn logits(&self, image: &Tensor) -> Vec<f32> {
        let mut x = self.stem.forward(image);
        relu(&mut x);
        for block in &self.blocks {
            x = block.forward(x);
        }
        // Global average pooling.
        let area = (x.h * x.w) as f32;
        let pooled: Vec<f32> = x.data.chunks_exact(x.h * x.w).map(|plane| plane.iter().sum::<f32>() / area).collect();
        self.fc_weights
            .chunks_exact(pooled.len())
            .zip(&self.fc_bias)
            .map(|(row, bias)| row.iter().zip(&pooled).fold(*bias, |acc, (w, p)| acc + w * p))
            .collect()
    }
}

fn image(seed: u64) -> Tensor {
    let mut rng = rng(seed, 3);
    // Smooth blobs plus noise, so that the image is not pure noise.
    let (cx, cy) = (signed_unit(&mut rng) * 8.0 + 16.0, signed_unit(&mut rng) * 8.0 + 16.0);
    let mut data = Vec::with_capacity(3 * IMAGE * IMAGE);
    for c in 0..3 {
        let tint = signed_unit(&mut rng);
        for y in 0..IMAGE {
            for x in 0..IMAGE {
                let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                let blob = libm::expf(-(dx * dx + dy * dy) / 64.0);
                data.push(blob * (1.0 + tint) + 0.1 * signed_unit(&mut rng) + c as f32 * 0.05);
            }
        }
    }
    Tensor { c: 3, h: IMAGE, w: IMAGE, data }
}

impl Function for Recognition {
    const NAME: &'static str = "recognition";
    type Request = Request;
    type Response = Response;
    type State = State;

    fn init() -> State {
        let mut rng = rng(0x7265_736e_6574, 0);
        let stem = Conv::new(&mut rng, 3, STAGES[0], 3, 2, 1.0);
        let mut blocks = Vec::new();
        let mut cin = STAGES[0];
        for (stage, &cout) in STAGES.iter().enumerate() {
            for b in 0..BLOCKS_PER_STAGE {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                blocks.push(Block {
                    conv1: Conv::new(&mut rng, cin, cout, 3, stride, 1.0),
                    // Damped second conv: the residual sum stays in range without batch norm.
                    conv2: Conv::new(&mut rng, cout, cout, 3, 1, 0.5),
                    shortcut: (stride != 1 || cin != cout).then(|| Conv::new(&mut rng, cin, cout, 1, stride, 1.0)),
                });
                cin = cout;
            }
        }
        let scale = libm::sqrtf(6.0 / cin as f32);
        let fc_weights = (0..CLASSES * cin).map(|_| signed_unit(&mut rng) * scale).collect();
        let fc_bias = (0..CLASSES).map(|_| signed_unit(&mut rng) * 0.01).collect();
        State { stem, blocks, fc_weights, fc_bias }
    }

    fn invoke(state: &mut State, req: Request) -> Result<Response, String> {
        let logits = state.logits(&image(req.seed));
        let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        // Softmax over the logits, then the five best classes.
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = logits.iter().map(|v| libm::expf(v - max)).collect();
        let total: f32 = exps.iter().sum();
        let mut ranked: Vec<(usize, f32)> = exps.iter().map(|e| e / total).enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(5);
        Ok(Response { digest: digest([bytes.as_slice()]), top5: ranked })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_has_at_least_32_mib_of_weights() {
        let state = Recognition::init();
        assert!(state.parameters() * 4 >= 32 << 20, "{} parameters", state.parameters());
    }
}
