import Core
import Foundation
import Kernels

/// `compute.sparse_kernels`: whether the masked block layers run on the sparse kernels.
public enum SparseKernelMode: String, Sendable, CaseIterable, Codable {
    /// Each masked layer runs the faster of dense and sparse for its shape, density, batch
    /// and precision, as measured on this machine.
    case auto
    /// Every masked layer runs sparse, whatever it costs.
    case on
    /// Dense products only: the inactive weights multiply as zeros.
    case off
}

/// What one block layer costs one lane's pass, in seconds.
public struct LayerCost: Sendable, Equatable {
    public var dense: Double
    public var sparse: Double
    public init(dense: Double, sparse: Double) { self.dense = dense; self.sparse = sparse }
}

/// Which masked block layers run sparse, and the time the choice is expected to save.
public struct SparseKernelChoice: Sendable, Equatable {
    public struct Layer: Sendable, Equatable {
        public var site: LinearSite
        public var activeCount: Int
        public var density: Double { Double(activeCount) / Double(max(1, site.outFeatures * site.inFeatures)) }
        /// nil where nothing was measured (modes on and off).
        public var cost: LayerCost?
        public var sparse: Bool
    }

    public var mode: SparseKernelMode
    /// Every block layer, in block order.
    public var layers: [Layer]

    /// `auto` takes the sparse kernels only where they are expected at least this much
    /// faster: a layer near break-even stays dense, so the measurement's noise and what
    /// the cost line misses cannot make a step slower than the dense one.
    public static let autoMargin = 0.85

    /// `active`: each block layer with its active weights; `cost`: its costs (asked for
    /// in mode auto, for masked layers only).
    public init(mode: SparseKernelMode, active: [(site: LinearSite, activeCount: Int)],
                cost: (LinearSite, Int) -> LayerCost) {
        self.mode = mode
        layers = active.map { site, n in
            let masked = n < site.outFeatures * site.inFeatures
            switch mode {
            case .off: return Layer(site: site, activeCount: n, cost: nil, sparse: false)
            case .on: return Layer(site: site, activeCount: n, cost: nil, sparse: masked)
            case .auto:
                guard masked else { return Layer(site: site, activeCount: n, cost: nil, sparse: false) }
                let c = cost(site, n)
                return Layer(site: site, activeCount: n, cost: c, sparse: c.sparse <= Self.autoMargin * c.dense)
            }
        }
    }

    public var sparseSites: [LinearSite] { layers.filter(\.sparse).map(\.site) }

    /// Seconds a lane's pass spends in the measured layers: all dense, and as chosen.
    public var expectedSeconds: (dense: Double, chosen: Double)? {
        let measured = layers.compactMap { l in l.cost.map { (l.sparse, $0) } }
        guard !measured.isEmpty else { return nil }
        return (measured.reduce(0) { $0 + $1.1.dense }, measured.reduce(0) { $0 + ($1.0 ? $1.1.sparse : $1.1.dense) })
    }

    /// One line: how many layers run sparse, at what density, and what it is expected to save.
    public var summary: String {
        let sparse = layers.filter(\.sparse), masked = layers.filter { $0.activeCount < $0.site.outFeatures * $0.site.inFeatures }
        var s = "sparse kernels (\(mode.rawValue)): \(sparse.count) of \(layers.count) block layers run sparse"
        if !sparse.isEmpty {
            let active = sparse.reduce(0) { $0 + $1.activeCount }
            let total = sparse.reduce(0) { $0 + $1.site.outFeatures * $1.site.inFeatures }
            s += String(format: " (density %.2f)", Double(active) / Double(total))
        }
        if mode == .auto, masked.count > sparse.count { s += "; \(masked.count - sparse.count) masked layer(s) stay dense, faster so" }
        if let e = expectedSeconds, e.dense > 0 {
            s += String(format: "; expected to save %.0f%% of those layers' time (%.1f → %.1f ms a lane per pass)",
                        100 * (1 - e.chosen / e.dense), 1000 * e.dense, 1000 * e.chosen)
        }
        return s
    }

    /// The layers per kind: "qkv 12/12, proj 0/12, …" (sparse of all).
    public var byKind: String {
        BlockLinear.allCases.map { k in
            let of = layers.filter { $0.site.layer == k }
            return "\(k) \(of.filter(\.sparse).count)/\(of.count)"
        }.joined(separator: ", ")
    }
}

/// The costs of a layer shape on this machine, measured once per shape: the dense product,
/// and the sparse kernels at two densities with the line through them (their cost is a
/// fixed part, the block transposes, plus a part proportional to the active weights).
/// A layer whose choice would rest on a point far from the two is measured at its own
/// density, and the line passes through that point from then on.
public final class MeasuredLayerCosts {
    public let rows: Int
    public let threads: Int
    public let mode: MatMulMode
    /// Forward and backward (training) or forward only (inference).
    public let training: Bool
    let repeats: Int
    struct Shape: Hashable { let outFeatures, inFeatures: Int }
    struct Line { var dense: Double; var at: [(active: Int, seconds: Double)] }
    var lines: [Shape: Line] = [:]
    let lock = NSLock()

    /// Densities of the two first points: around where the kernels break even.
    static let calibrationDensities = [0.05, 0.3]
    /// At most this many rows are timed, and the times scaled to the pass's rows: both
    /// sides' costs grow in proportion to the rows, and a DeiT-Base lane would otherwise
    /// spend seconds measuring.
    static let timedRows = 4096

    public init(rows: Int, threads: Int, mode: MatMulMode, training: Bool, repeats: Int = 3) {
        self.rows = rows; self.threads = threads; self.mode = mode; self.training = training; self.repeats = repeats
    }

    /// The costs for one lane of a `batch`-image pass on `threads` threads: a workspace
    /// splits the batch over min(threads, batch) lanes, each on one thread when there are
    /// several.
    public convenience init(model: ViTModel, batch: Int, threads: Int, precision: Precision, training: Bool) {
        let lanes = max(1, min(threads, batch))
        let laneBatch = (batch + lanes - 1) / lanes
        self.init(rows: laneBatch * model.config.blockTokens, threads: lanes > 1 ? 1 : threads, mode: MatMulMode(precision),
                  training: training)
    }

    public func cost(_ site: LinearSite, active: Int) -> LayerCost {
        lock.lock(); defer { lock.unlock() }
        let shape = Shape(outFeatures: site.outFeatures, inFeatures: site.inFeatures)
        let total = shape.outFeatures * shape.inFeatures
        var line = lines[shape] ?? Line(dense: time(shape, active: nil),
                                        at: Self.calibrationDensities.map { d in
                                            let n = Int((d * Double(total)).rounded())
                                            return (n, time(shape, active: n))
                                        })
        var sparse = Self.interpolate(line.at, active)
        // Check a prediction near the break-even against a measurement at this density.
        let nearest = line.at.map { abs($0.active - active) }.min() ?? 0
        if abs(sparse / line.dense - SparseKernelChoice.autoMargin) < 0.25 && nearest > total / 50 {
            let measured = time(shape, active: active)
            line.at.append((active, measured))
            line.at.sort { $0.active < $1.active }
            sparse = measured
        }
        lines[shape] = line
        return LayerCost(dense: line.dense, sparse: sparse)
    }

    /// The cost at `active` on the piecewise line through the points (extended past the ends).
    static func interpolate(_ points: [(active: Int, seconds: Double)], _ active: Int) -> Double {
        guard points.count >= 2 else { return points.first?.seconds ?? 0 }
        var i = 0
        while i + 2 < points.count && active > points[i + 1].active { i += 1 }
        let a = points[i], b = points[i + 1]
        let slope = (b.seconds - a.seconds) / Double(max(1, b.active - a.active))
        return max(0, a.seconds + slope * Double(active - a.active))
    }

    /// Best of `repeats` after one untimed run: the dense layer (active nil) or the sparse
    /// kernels on a uniformly random mask with `active` entries.
    func time(_ shape: Shape, active: Int?) -> Double {
        let o = shape.outFeatures, i = shape.inFeatures, r = min(rows, Self.timedRows)
        var rng = Xoshiro256(seed: UInt64(o * 7919 + i))
        let x = FloatBuffer(uniformCount: r * i, rng: &rng), dy = FloatBuffer(uniformCount: r * o, rng: &rng)
        let w = FloatBuffer(uniformCount: o * i, rng: &rng), b = FloatBuffer(uniformCount: o, rng: &rng)
        let y = FloatBuffer(count: r * o), dx = FloatBuffer(count: r * i), dw = FloatBuffer(count: o * i), db = FloatBuffer(count: o)
        MatMul.setThreadsForCallingThread(threads, backend: mode.backend)
        let run: () -> Void
        if let active {
            let mask = FloatBuffer(count: o * i)
            var order = Array(0 ..< o * i)
            for k in 0 ..< min(active, order.count) {
                order.swapAt(k, k + Int(rng.next() % UInt64(order.count - k)))
                mask.pointer[order[k]] = 1
            }
            var weight = SparseWeight(mask: mask.pointer, outFeatures: o, inFeatures: i)
            weight.gather(from: w.pointer)
            let dvalues = FloatBuffer(count: max(1, weight.activeCount))
            run = { [training, threads] in
                SparseLinear.forwardRows(y: y.pointer, x: x.pointer, bias: b.pointer, weight: weight, rows: r, threads: threads)
                if training {
                    SparseLinear.backwardRows(dx: dx.pointer, dvalues: dvalues.pointer, dbias: db.pointer, dy: dy.pointer, x: x.pointer,
                                              weight: weight, rows: r, threads: threads)
                }
            }
        } else {
            run = { [training, mode] in
                Linear.forward(y: y.pointer, x: x.pointer, weight: w.pointer, bias: b.pointer, rows: r, inFeatures: i, outFeatures: o, mode: mode)
                if training {
                    Linear.backward(dx: dx.pointer, dweight: dw.pointer, dbias: db.pointer, dy: dy.pointer, x: x.pointer, weight: w.pointer,
                                    rows: r, inFeatures: i, outFeatures: o, mode: mode)
                }
            }
        }
        return Stopwatch.best(of: repeats, run) * Double(rows) / Double(r)
    }
}
