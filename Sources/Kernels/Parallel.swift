import Dispatch

/// Work split across threads. The model parallelises by *lanes*: the batch is cut into
/// `lanes` contiguous slices and each thread runs whole layers on its slice with
/// single-threaded BLAS. One fork/join per step instead of one per op keeps two cores
/// busy on shapes where per-op threading costs more than it gives.
public enum Parallel {
    /// Runs `body(i)` for every i in 0..<count, on up to `count` threads, and returns
    /// when all are done. count == 1 runs inline.
    public static func forEach(_ count: Int, _ body: (Int) -> Void) {
        if count <= 1 {
            if count == 1 { body(0) }
            return
        }
        // The body touches disjoint slices through raw pointers, which the compiler
        // cannot see as Sendable; each iteration owns its slice, so this is safe.
        nonisolated(unsafe) let work = body
        DispatchQueue.concurrentPerform(iterations: count) { work($0) }
    }

    /// The i-th of `parts` nearly equal contiguous slices of 0..<total (earlier slices get
    /// the remainder), so that `parts` slices partition the range exactly.
    public static func slice(_ i: Int, of parts: Int, total: Int) -> Range<Int> {
        precondition(parts >= 1 && i >= 0 && i < parts)
        let base = total / parts, extra = total % parts
        let start = i * base + min(i, extra)
        return start ..< start + base + (i < extra ? 1 : 0)
    }

    /// Runs `body(range)` over `total` items split into at most `threads` slices of at
    /// least `grain` items each.
    public static func forRanges(total: Int, threads: Int, grain: Int = 4096,
                                 _ body: (Range<Int>) -> Void) {
        let parts = max(1, min(threads, total / max(grain, 1)))
        if parts == 1 { body(0 ..< total); return }
        forEach(parts) { body(slice($0, of: parts, total: total)) }
    }
}
