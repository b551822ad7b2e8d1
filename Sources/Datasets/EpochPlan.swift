import Core
import Kernels

/// Which images every step of every epoch uses. Each epoch is a seeded permutation of
/// the data set; step k of an epoch takes positions [k·B, min((k+1)·B, N)) of it (the
/// last step of an epoch may be short, so every image is used exactly once per epoch).
/// A step's images are split among ranks in proportion to their batch shares, so the
/// ranks' shards partition every epoch exactly. Everything is a pure function of
/// (seed, epoch, step): a cursor of (epoch, step) is the whole data state.
public struct EpochPlan: Sendable, Equatable {
    public let datasetSize: Int
    public let batchSize: Int
    public let seed: UInt64

    public init(datasetSize: Int, batchSize: Int, seed: UInt64) {
        precondition(datasetSize >= 1 && batchSize >= 1, "EpochPlan: empty data set or batch")
        self.datasetSize = datasetSize; self.batchSize = batchSize; self.seed = seed
    }

    public var stepsPerEpoch: Int { (datasetSize + batchSize - 1) / batchSize }

    /// The epoch's order of image indices (Fisher–Yates under a generator seeded by
    /// (seed, epoch)).
    public func permutation(epoch: Int) -> [Int32] {
        var order = (0 ..< Int32(datasetSize)).map { $0 }
        var rng = Xoshiro256(seed: StreamSeed.mix(seed, StreamSeed.shuffle, UInt64(epoch)))
        var i = datasetSize - 1
        while i > 0 {
            let j = Int(rng.next() % UInt64(i + 1))
            order.swapAt(i, j)
            i -= 1
        }
        return order
    }

    /// Positions within the epoch's permutation that step `step` covers.
    public func positions(step: Int) -> Range<Int> {
        precondition(step >= 0 && step < stepsPerEpoch, "EpochPlan: step \(step) outside 0..<\(stepsPerEpoch)")
        return step * batchSize ..< min((step + 1) * batchSize, datasetSize)
    }

    /// Splits a step's positions among ranks with the given shares (their batch sizes,
    /// summing to the batch size): full steps give each rank exactly its share; a short
    /// last step gives each its proportional part, the remainder going to the first ranks.
    public static func split(_ range: Range<Int>, shares: [Int]) -> [Range<Int>] {
        let total = shares.reduce(0, +)
        precondition(total >= 1 && shares.allSatisfy { $0 >= 0 }, "EpochPlan.split: bad shares \(shares)")
        let n = range.count
        var parts = shares.map { $0 * n / total }
        var left = n - parts.reduce(0, +)
        var i = 0
        while left > 0 {
            if shares[i] > 0 { parts[i] += 1; left -= 1 }
            i = (i + 1) % shares.count
        }
        var out: [Range<Int>] = []
        var start = range.lowerBound
        for p in parts {
            out.append(start ..< start + p)
            start += p
        }
        return out
    }

    /// The image indices rank `rank` of `shares.count` uses at (epoch, step).
    public func indices(epoch: Int, step: Int, rank: Int = 0, shares: [Int]? = nil,
                        permutation: [Int32]? = nil) -> [Int32] {
        let order = permutation ?? self.permutation(epoch: epoch)
        let range = EpochPlan.split(positions(step: step), shares: shares ?? [batchSize])[rank]
        return Array(order[range])
    }

    /// Where a rank that holds `positions` of epoch `epoch` will most likely be next: the
    /// same place in the next batch (the first batch of the next epoch after the last),
    /// as long as the shares stay. Prefetching reads it; a wrong guess costs only the
    /// wasted decoding.
    public func nextPositions(after positions: Range<Int>, epoch: Int) -> (epoch: Int, positions: Range<Int>) {
        let step = positions.lowerBound / batchSize
        let offset = positions.lowerBound - step * batchSize
        let (e, s) = step + 1 < stepsPerEpoch ? (epoch, step + 1) : (epoch + 1, 0)
        let batch = self.positions(step: s)
        let lo = min(batch.lowerBound + offset, batch.upperBound)
        return (e, lo ..< min(lo + positions.count, batch.upperBound))
    }
}

/// The images at an epoch's positions, the epoch's permutation made once and kept: what a
/// gradient source (in this process or a worker) turns its share into, and the likely next
/// share an image folder decodes while this one computes.
public struct EpochOrder {
    public let plan: EpochPlan
    private var cached: (epoch: Int, order: [Int32])?

    public init(plan: EpochPlan) { self.plan = plan }

    /// The images at `positions` of `epoch`'s permutation.
    public mutating func indices(_ positions: Range<Int>, epoch: Int) -> [Int32] {
        if cached?.epoch != epoch { cached = (epoch, plan.permutation(epoch: epoch)) }
        return Array(cached!.order[positions])
    }

    /// The images of the same positions of the next step (`EpochPlan.nextPositions`).
    public mutating func next(after positions: Range<Int>, epoch: Int) -> (indices: [Int32], epoch: Int) {
        let n = plan.nextPositions(after: positions, epoch: epoch)
        if n.epoch == epoch { return (indices(n.positions, epoch: epoch), epoch) }
        // The next epoch's order is made here and not kept: this epoch's goes on being asked for.
        return (Array(plan.permutation(epoch: n.epoch)[n.positions]), n.epoch)
    }
}
