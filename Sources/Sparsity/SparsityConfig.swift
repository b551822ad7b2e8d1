import Core
import Model

/// The `sparsity:` section of a run config.
public struct SparsityConfig: Sendable, Equatable, Codable {
    public enum Method: String, Sendable, Codable, CaseIterable {
        /// No masks.
        case dense
        /// SViTE: random ERK topology, prune-and-grow every `update_interval` steps.
        case svite
        /// One-shot magnitude pruning: dense until `prune_at`, then global |w| pruning to
        /// the target and fine-tuning.
        case omp
        /// Gradual magnitude pruning (cubic schedule, `gmp_events` prunes from `gmp_start`
        /// to `gmp_end`), per layer with the configured distribution.
        case gmp
        /// Taylor pruning: as OMP with importance |w·g|.
        case tp
        /// S2ViTE: random heads and MLP neurons per block (`head_density`, `mlp_density`),
        /// structured prune-and-grow on the SViTE schedule; steps run the compact model.
        case s2vite
        /// Salience-based structured pruning: dense until `prune_at`, then the heads of
        /// lowest Taylor importance and the neurons of smallest weight norm go at once.
        case ssp

        /// Methods whose masks switch whole heads and neurons.
        public var isStructured: Bool { self == .s2vite || self == .ssp }
    }

    public var method: Method = .dense
    /// Fraction of the prunable weights that are inactive (0.5 = 50% sparsity).
    public var sparsity: Double = 0.5
    public var distribution: SparsityDistribution = .erk
    public var updateInterval: Int = 100
    public var endFraction: Double = 0.8
    public var initialFraction: Double = 0.5
    public var decay: UpdateSchedule.Decay = .paper
    /// Also sparsify the patch embedding and the head (the official code does).
    public var includeEmbeddingAndHead = false
    /// c: at an update step each worker sends its top c·k inactive gradients per layer.
    public var candidateMultiplier: Int = 2
    /// OMP/TP: when to prune, as a fraction of the run.
    public var pruneAt: Double = 0.5
    /// GMP: the cubic schedule's start, end (fractions of the run) and number of prunes.
    public var gmpStart: Double = 1.0 / 6
    public var gmpEnd: Double = 0.5
    public var gmpEvents: Int = 20
    /// S2ViTE/SSP: fraction of each block's heads and MLP neurons kept (rounded up; nil:
    /// 1 − sparsity).
    public var headDensity: Double? = nil
    public var mlpDensity: Double? = nil
    /// S2ViTE: how many kept heads (and neurons) an update exchanges, from the update's
    /// fraction ζ and the k kept units of a block.
    public var unitExchange: UnitExchange = .floor
    public var keptHeadFraction: Double { headDensity ?? density }
    public var keptNeuronFraction: Double { mlpDensity ?? density }

    /// The baselines' pruning schedule (nil for dense and SViTE).
    public var pruningPlan: PruningPlan? {
        switch method {
        case .omp: return PruningPlan(kind: .oneShot(at: pruneAt, taylor: false), targetDensity: density)
        case .tp: return PruningPlan(kind: .oneShot(at: pruneAt, taylor: true), targetDensity: density)
        case .gmp: return PruningPlan(kind: .gradual(start: gmpStart, end: gmpEnd, events: gmpEvents), targetDensity: density)
        // SSP prunes once at `prune_at`, to the head and neuron budgets.
        case .ssp: return PruningPlan(kind: .oneShot(at: pruneAt, taylor: true), targetDensity: density)
        case .dense, .svite, .s2vite: return nil
        }
    }

    public init() {}

    public var isSparse: Bool { method != .dense }
    public var density: Double { 1 - sparsity }
    public var schedule: UpdateSchedule {
        UpdateSchedule(interval: updateInterval, endFraction: endFraction, initialFraction: initialFraction, decay: decay)
    }

}

extension SparsityConfig: ConfigSection {
    public static let sectionName = "sparsity"
    public static var defaults: SparsityConfig { SparsityConfig() }

    public static var keys: [ConfigKey<SparsityConfig>] {
        [
            .value("method", \.method),
            .value("sparsity", \.sparsity, check: { (0 ..< 1).contains($0) ? nil : "must be in [0, 1), got \($0)" }),
            .value("distribution", \.distribution),
            .value("update_interval", \.updateInterval, check: { $0 >= 1 ? nil : "must be at least 1, got \($0)" }),
            .value("end_fraction", \.endFraction, check: { $0 > 0 && $0 <= 1 ? nil : "must be in (0, 1], got \($0)" }),
            .value("initial_fraction", \.initialFraction, check: { (0 ... 1).contains($0) ? nil : "must be in [0, 1], got \($0)" }),
            .value("decay", \.decay),
            .value("include_embedding_and_head", \.includeEmbeddingAndHead),
            .value("candidate_multiplier", \.candidateMultiplier,
                   check: { (1 ... 1_000_000).contains($0) ? nil : "must be at least 1, got \($0)" }),
            .value("prune_at", \.pruneAt, check: { $0 > 0 && $0 < 1 ? nil : "must be in (0, 1), got \($0)" }),
            .value("gmp_start", \.gmpStart),
            .value("gmp_end", \.gmpEnd),
            .value("gmp_events", \.gmpEvents, check: { $0 >= 1 ? nil : "must be at least 1, got \($0)" }),
            .value("unit_exchange", \.unitExchange),
            .optional("head_density", \.headDensity, check: { $0 > 0 && $0 <= 1 ? nil : "must be in (0, 1], got \($0)" }),
            .optional("mlp_density", \.mlpDensity, check: { $0 > 0 && $0 <= 1 ? nil : "must be in (0, 1], got \($0)" }),
        ]
    }

    public func check(_ m: ConfigMapping) throws {
        for (key, v) in [("head_density", headDensity), ("mlp_density", mlpDensity)] where v != nil && !method.isStructured {
            throw m.error(key, "only s2vite and ssp keep heads and neurons; method \(method.rawValue) ignores it (remove it or use sparsity)")
        }
        guard gmpStart >= 0 && gmpStart < gmpEnd && gmpEnd <= 1 else {
            throw m.error("gmp_end", "need 0 <= gmp_start < gmp_end <= 1, got \(gmpStart) and \(gmpEnd)")
        }
    }
}

extension SparsityConfig.Method: ConfigChoice {}
extension SparsityDistribution: ConfigChoice {}
extension UpdateSchedule.Decay: ConfigChoice {}
extension UnitExchange: ConfigChoice {}

/// Parameters and FLOPs of a masked model, in the paper's terms.
public struct SparsityReport: Sendable, Equatable, Codable {
    public var density: Double
    /// Active parameters: every non-prunable parameter plus the active prunable ones.
    public var activeParameters: Int
    public var totalParameters: Int
    public var denseFLOPs: Double
    public var sparseFLOPs: Double
    public var explorationRate: Double
    public var maskVersion: Int
    public var flopsSaving: Double { 1 - sparseFLOPs / denseFLOPs }

    /// The figures under the names the metrics log, the status socket, `svite eval` and the
    /// experiment tables use.
    public var fields: [String: Any] {
        ["density": density, "sparsity": 1 - density, "active_parameters": activeParameters, "parameters": totalParameters,
         "flops": sparseFLOPs, "dense_flops": denseFLOPs, "flops_saving": flopsSaving,
         "exploration_rate": explorationRate, "mask_version": maskVersion]
            .merging(heads.map { ["heads": $0, "neurons": neurons ?? 0] } ?? [:]) { a, _ in a }
    }

    /// Kept heads and neurons over all blocks (structured masks only).
    public var heads: Int? = nil
    public var neurons: Int? = nil

    public init(density: Double, activeParameters: Int, totalParameters: Int, denseFLOPs: Double, sparseFLOPs: Double,
                explorationRate: Double, maskVersion: Int, heads: Int? = nil, neurons: Int? = nil) {
        self.density = density; self.activeParameters = activeParameters; self.totalParameters = totalParameters
        self.denseFLOPs = denseFLOPs; self.sparseFLOPs = sparseFLOPs; self.explorationRate = explorationRate
        self.maskVersion = maskVersion; self.heads = heads; self.neurons = neurons
    }

    // snake_case keys as the metrics log names them (dense_flops, not dense_fl_o_ps).
    enum CodingKeys: String, CodingKey {
        case density, activeParameters, totalParameters, explorationRate, maskVersion, heads, neurons
        case denseFLOPs = "denseFlops", sparseFLOPs = "sparseFlops"
    }

    /// Unstructured: linear layers scale with their density; attention products, norms
    /// and the rest do not. Per image, forward: a block linear runs on every token, the
    /// patch embedding on every patch, the head on CLS only. Structured: the FLOPs of the
    /// compact model, whose attention products run only for the kept heads.
    public init(masks: MaskSet, model: ViTModel) {
        let c = model.config
        density = masks.density
        totalParameters = masks.layout.parameterCount
        activeParameters = totalParameters - masks.totalPrunable + masks.activePrunable
        denseFLOPs = model.forwardFLOPsPerImage
        if masks.isStructured {
            let units = UnitSelection(masks: masks, model: model)
            heads = units.headCount
            neurons = units.neuronCount
            sparseFLOPs = c.compacted(heads: units.keptHeads.map(\.count), hidden: units.keptNeurons.map(\.count)).forwardFLOPsPerImage
        } else {
            var removed = 0.0
            for t in masks.prunable {
                let rows: Double = t.name.hasPrefix("blocks.") ? Double(c.blockTokens) : (t.name == "head.weight" ? 1 : Double(c.numPatches))
                removed += 2 * rows * Double(t.count - masks.activeCount(t))
            }
            sparseFLOPs = denseFLOPs - removed
        }
        explorationRate = masks.explorationRate
        maskVersion = masks.version
    }
}

extension MaskSet {
    /// An all-ones mask over the tensors the method prunes.
    public convenience init(for c: SparsityConfig, layout: ParameterLayout) {
        if c.method.isStructured {
            self.init(layout: layout, prunable: UnitSelection.prunableTensors(layout), structured: true)
        } else {
            self.init(layout: layout, prunable: MaskSet.prunableTensors(layout, includeEmbeddingAndHead: c.includeEmbeddingAndHead))
        }
    }

    /// The starting topology of a run: the configured per-layer counts (or heads and
    /// neurons) drawn at random from `seed` (nil for dense runs). Training and the
    /// pictures draw it the same way.
    public static func initial(_ c: SparsityConfig, model: ViTModel, seed: UInt64) -> MaskSet? {
        c.makeMethod().initialMasks(model: model, seed: seed)
    }
}

/// S2ViTE: the number of units an update exchanges in a block of k kept units at
/// fraction ζ.
public enum UnitExchange: String, Sendable, Codable, CaseIterable {
    /// ⌊ζ·k⌋ (the default): with few heads an update exchanges a head only while
    /// ζ·k ≥ 1, and none once the decaying ζ falls below 1/k.
    case floor
    /// ⌈ζ·k⌉, the paper's rule (as for weights): at least one unit every update while
    /// ζ > 0, which with 2 of 3 heads kept replaces half of them every update to the end.
    case ceil

    public func count(kept: Int, inactive: Int, fraction: Double) -> Int {
        let x = fraction * Double(kept)
        return min(Int(self == .floor ? x.rounded(.down) : x.rounded(.up)), kept, inactive)
    }
}
