import Core

/// One named tensor inside the flat parameter buffer.
public struct TensorSpec: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var shape: [Int]
    public var offset: Int
    public var count: Int { shape.reduce(1, *) }

    public var description: String { "\(name) \(shape)" }
}

/// Where every parameter lives in the one flat `Float` buffer. Gradients, optimizer
/// moments and masks use the same layout (same offsets), and every process derives it
/// from the config alone, so a hash of it is enough to check two sides agree.
/// Names and shapes are timm's `VisionTransformer` state-dict keys.
public struct ParameterLayout: Sendable, Equatable {
    public let tensors: [TensorSpec]
    /// Length of the flat buffer (tensors start on 16-float boundaries; gaps stay zero).
    public let count: Int
    /// Number of real parameters (the sum of the tensors' element counts).
    public let parameterCount: Int
    private let index: [String: Int]

    /// Alignment of each tensor's start, in floats (64 bytes).
    public static let alignment = 16

    public init(tensors named: [(String, [Int])]) {
        var specs: [TensorSpec] = []
        var offset = 0, params = 0
        var index: [String: Int] = [:]
        for (name, shape) in named {
            precondition(index[name] == nil, "ParameterLayout: duplicate tensor \(name)")
            let spec = TensorSpec(name: name, shape: shape, offset: offset)
            index[name] = specs.count
            specs.append(spec)
            params += spec.count
            offset += (spec.count + Self.alignment - 1) / Self.alignment * Self.alignment
        }
        self.tensors = specs
        self.count = offset
        self.parameterCount = params
        self.index = index
    }

    public init(config c: ViTConfig) {
        let d = c.dim
        var t: [(String, [Int])] = [
            ("cls_token", [1, 1, d]),
            ("pos_embed", [1, c.tokens, d]),
            ("patch_embed.proj.weight", [d, c.inChannels, c.patchSize, c.patchSize]),
            ("patch_embed.proj.bias", [d]),
        ]
        for i in 0 ..< c.depth {
            let p = "blocks.\(i).", a = c.attentionWidth(inBlock: i), h = c.hidden(inBlock: i)
            t += [
                (p + "norm1.weight", [d]), (p + "norm1.bias", [d]),
                (p + "attn.qkv.weight", [3 * a, d]), (p + "attn.qkv.bias", [3 * a]),
                (p + "attn.proj.weight", [d, a]), (p + "attn.proj.bias", [d]),
                (p + "norm2.weight", [d]), (p + "norm2.bias", [d]),
                (p + "mlp.fc1.weight", [h, d]), (p + "mlp.fc1.bias", [h]),
                (p + "mlp.fc2.weight", [d, h]), (p + "mlp.fc2.bias", [d]),
            ]
        }
        t += [("norm.weight", [d]), ("norm.bias", [d]),
              ("head.weight", [c.numClasses, d]), ("head.bias", [c.numClasses])]
        // Last, so the initialiser's stream gives every other tensor the values it gives
        // the same model without a selector.
        if c.hasTokenSelector {
            let h = c.selectorHidden
            t += h > 0
                ? [("token_selector.fc1.weight", [h, d]), ("token_selector.fc1.bias", [h]),
                   ("token_selector.fc2.weight", [1, h]), ("token_selector.fc2.bias", [1])]
                : [("token_selector.fc.weight", [1, d]), ("token_selector.fc.bias", [1])]
        }
        self.init(tensors: t)
    }

    public subscript(name: String) -> TensorSpec? { index[name].map { tensors[$0] } }

    /// The spec for a name known to exist (a programming error otherwise).
    public func spec(_ name: String) -> TensorSpec {
        guard let s = self[name] else { preconditionFailure("ParameterLayout: no tensor named \(name)") }
        return s
    }

    /// The offset of a name known to exist.
    public func offset(_ name: String) -> Int { spec(name).offset }

    /// FNV-1a over every name, shape and offset: equal hashes mean equal layouts.
    public var hash: UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        func mix(_ bytes: some Sequence<UInt8>) { for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 } }
        for t in tensors {
            mix(t.name.utf8)
            mix("\(t.shape):\(t.offset);".utf8)
        }
        return h
    }

    public static func == (a: ParameterLayout, b: ParameterLayout) -> Bool { a.tensors == b.tensors }
}

/// Offsets of one transformer block's tensors, resolved once so hot code never looks
/// up a name.
public struct BlockOffsets: Sendable {
    public var norm1Weight, norm1Bias, qkvWeight, qkvBias, projWeight, projBias: Int
    public var norm2Weight, norm2Bias, fc1Weight, fc1Bias, fc2Weight, fc2Bias: Int

    init(_ layout: ParameterLayout, block i: Int) {
        let p = "blocks.\(i)."
        norm1Weight = layout.offset(p + "norm1.weight"); norm1Bias = layout.offset(p + "norm1.bias")
        qkvWeight = layout.offset(p + "attn.qkv.weight"); qkvBias = layout.offset(p + "attn.qkv.bias")
        projWeight = layout.offset(p + "attn.proj.weight"); projBias = layout.offset(p + "attn.proj.bias")
        norm2Weight = layout.offset(p + "norm2.weight"); norm2Bias = layout.offset(p + "norm2.bias")
        fc1Weight = layout.offset(p + "mlp.fc1.weight"); fc1Bias = layout.offset(p + "mlp.fc1.bias")
        fc2Weight = layout.offset(p + "mlp.fc2.weight"); fc2Bias = layout.offset(p + "mlp.fc2.bias")
    }
}

/// Offsets of the whole model's tensors.
public struct ModelOffsets: Sendable {
    public var clsToken, posEmbed, patchWeight, patchBias: Int
    /// SViTE+ token selector: (fc1 weight, fc1 bias, fc2 weight, fc2 bias) with a hidden
    /// layer, or (fc weight, fc bias, -1, -1) when linear; nil without a selector.
    public var selector: (w1: Int, b1: Int, w2: Int, b2: Int)?
    public var blocks: [BlockOffsets]
    public var normWeight, normBias, headWeight, headBias: Int

    public init(_ layout: ParameterLayout, depth: Int) {
        clsToken = layout.offset("cls_token"); posEmbed = layout.offset("pos_embed")
        patchWeight = layout.offset("patch_embed.proj.weight"); patchBias = layout.offset("patch_embed.proj.bias")
        if let w = layout["token_selector.fc1.weight"] {
            selector = (w.offset, layout.offset("token_selector.fc1.bias"), layout.offset("token_selector.fc2.weight"),
                        layout.offset("token_selector.fc2.bias"))
        } else if let w = layout["token_selector.fc.weight"] {
            selector = (w.offset, layout.offset("token_selector.fc.bias"), -1, -1)
        }
        blocks = (0 ..< depth).map { BlockOffsets(layout, block: $0) }
        normWeight = layout.offset("norm.weight"); normBias = layout.offset("norm.bias")
        headWeight = layout.offset("head.weight"); headBias = layout.offset("head.bias")
    }
}

extension FloatBuffer {
    /// The floats of one named tensor.
    public func view(_ spec: TensorSpec) -> UnsafeMutableBufferPointer<Float> {
        precondition(spec.offset + spec.count <= count, "FloatBuffer: tensor \(spec.name) lies outside the buffer")
        return UnsafeMutableBufferPointer(start: pointer + spec.offset, count: spec.count)
    }
}
