import Core
import Kernels

/// timm-like initialisation of a fresh ViT:
/// - every Linear weight (qkv, proj, fc1, fc2, head), pos_embed and cls_token:
///   normal(0, 0.02²) truncated at ±2σ (timm's `trunc_normal_(std=.02)` with its default
///   bounds ±2 is effectively untruncated at this σ; ±2σ is what the recipe means);
/// - Linear biases zero; LayerNorm weight 1, bias 0;
/// - patch embedding: PyTorch's Conv2d default, uniform(±1/√fan_in) for weight and bias;
/// - SViTE+'s token scorer: its last layer zero, so every patch scores alike at the start
///   and the first selections are the Gumbel noise's alone. (A random scorer tilts the
///   start toward background or object, and the selection then runs away with the tilt.)
public enum Initializer {
    public static func initialize(_ params: FloatBuffer, layout: ParameterLayout, seed: UInt64) {
        precondition(params.count == layout.count, "Initializer: buffer size \(params.count) ≠ layout \(layout.count)")
        var rng = Xoshiro256(seed: seed)
        params.zero()
        for t in layout.tensors {
            let v = params.view(t)
            let name = t.name
            if name.hasSuffix("norm1.weight") || name.hasSuffix("norm2.weight") || name == "norm.weight" {
                for i in v.indices { v[i] = 1 }
            } else if name == "patch_embed.proj.weight" || name == "patch_embed.proj.bias" {
                let fanIn = Float(layout.spec("patch_embed.proj.weight").shape.dropFirst().reduce(1, *))
                let bound = 1 / fanIn.squareRoot()
                for i in v.indices { v[i] = (rng.nextUniform() * 2 - 1) * bound }
            } else if name == "token_selector.fc.weight" || name == "token_selector.fc2.weight" {
                continue
            } else if name.hasSuffix(".weight") || name == "pos_embed" || name == "cls_token" {
                for i in v.indices { v[i] = rng.nextTruncatedNormal(std: 0.02) }
            }
            // biases and everything else stay zero
        }
    }
}
