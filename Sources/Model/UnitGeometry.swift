/// Where the structured units of a block (attention heads, MLP neurons) sit in its
/// tensors: the one definition behind the compact model's copy runs (CompactPlan) and the
/// structured masks and scores (Sparsity's UnitElements). D = dim, hd = head width,
/// H = MLP width. Each unit-bearing tensor is viewed as [outer][unit][inner]:
/// - `attn.qkv.weight` [3][heads][hd·D] and `attn.qkv.bias` [3][heads][hd]: head h's q, k
///   and v rows;
/// - `attn.proj.weight` [D][heads][hd]: head h's columns;
/// - `mlp.fc1.weight` [1][H][D] and `mlp.fc1.bias` [1][H][1]: neuron j's row;
/// - `mlp.fc2.weight` [D][H][1]: neuron j's column.
/// `attn.proj.bias` and `mlp.fc2.bias` belong to the block, not to a unit.
public struct UnitSlices: Sendable, Equatable {
    public enum Kind: Sendable { case head, neuron }
    public enum Part: Sendable {
        /// qkv rows / the fc1 row: what computes the unit's activation.
        case incomingWeight
        /// qkv biases / the fc1 bias.
        case incomingBias
        /// attn.proj columns / the fc2 column: what carries the unit into the residual.
        case outgoing
    }

    public let kind: Kind
    public let part: Part
    public let outer: Int
    public let units: Int
    public let inner: Int

    /// Offset, within the tensor, of unit `unit`'s floats in outer slice `o` (`inner` long).
    public func offset(outer o: Int, unit: Int) -> Int { (o * units + unit) * inner }

    /// The same in a tensor of `kept` units, for the `position`-th kept one.
    public func compactOffset(outer o: Int, position: Int, kept: Int) -> Int { (o * kept + position) * inner }

    /// The units of a block tensor (named without its `blocks.L.` prefix), nil for a tensor
    /// that holds none. `config` is a full (not compact) model's.
    public static func of(_ name: Substring, config c: ViTConfig) -> UnitSlices? {
        let d = c.dim, hd = c.headDim, hidden = c.hidden
        switch name {
        case "attn.qkv.weight": return UnitSlices(kind: .head, part: .incomingWeight, outer: 3, units: c.heads, inner: hd * d)
        case "attn.qkv.bias": return UnitSlices(kind: .head, part: .incomingBias, outer: 3, units: c.heads, inner: hd)
        case "attn.proj.weight": return UnitSlices(kind: .head, part: .outgoing, outer: d, units: c.heads, inner: hd)
        case "mlp.fc1.weight": return UnitSlices(kind: .neuron, part: .incomingWeight, outer: 1, units: hidden, inner: d)
        case "mlp.fc1.bias": return UnitSlices(kind: .neuron, part: .incomingBias, outer: 1, units: hidden, inner: 1)
        case "mlp.fc2.weight": return UnitSlices(kind: .neuron, part: .outgoing, outer: d, units: hidden, inner: 1)
        default: return nil
        }
    }
}
