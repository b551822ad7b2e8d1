import Foundation

/// What `svite plot` draws from a run's metrics.jsonl: each quantity against steps and
/// against wall time since the run began (resumed runs continue the clock of the first
/// segment, from the records' own elapsed seconds).
public struct TrainingCurves: Sendable {
    public struct Point: Sendable, Equatable {
        public var step: Double
        public var seconds: Double
        public var value: Double
    }

    public var name: String
    public var loss: [Point] = []
    public var trainAccuracy: [Point] = []
    public var evalAccuracy: [Point] = []
    public var evalLoss: [Point] = []
    public var lr: [Point] = []
    public var density: [Point] = []
    public var bytesUp: [Point] = []
    public var bytesDown: [Point] = []
    public var imagesPerSecond: [Point] = []

    /// The curves of the run whose metrics are at `path` (a run directory or the file).
    public static func load(_ path: String, name: String? = nil) throws -> TrainingCurves {
        var isDir: ObjCBool = false
        let file = FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue ? "\(path)/metrics.jsonl" : path
        guard FileManager.default.fileExists(atPath: file) else {
            throw CurvesError(message: "\(file): no such file (svite plot takes run directories, or their metrics.jsonl)")
        }
        let records = MetricsLog.read(file)
        guard !records.isEmpty else { throw CurvesError(message: "\(file) holds no metrics records") }
        let runDir = isDir.boolValue ? path : (path as NSString).deletingLastPathComponent
        var c = TrainingCurves(name: name ?? (runDir as NSString).lastPathComponent)
        // Wall time: a train record knows its elapsed seconds; other records are placed by
        // their unix time against the latest train record before them.
        var anchor: (time: Double, elapsed: Double)?
        for r in records {
            let seconds: Double
            if let e = r.elapsedSeconds, let t = r.time { anchor = (t, e); seconds = e }
            else if let e = r.elapsedSeconds { seconds = e }
            else if let a = anchor, let t = r.time { seconds = a.elapsed + max(0, t - a.time) }
            else { seconds = anchor?.elapsed ?? 0 }
            func add(_ keyPath: WritableKeyPath<TrainingCurves, [Point]>, _ v: Double?) {
                if let v, v.isFinite { c[keyPath: keyPath].append(Point(step: Double(r.step), seconds: seconds, value: v)) }
            }
            switch r.kind {
            case .train:
                add(\.loss, r.loss); add(\.trainAccuracy, r.trainAccuracy.map { $0 * 100 }); add(\.lr, r.lr)
                add(\.density, r.density); add(\.bytesUp, r.bytesUpPerStep.map(Double.init)); add(\.bytesDown, r.bytesDownPerStep.map(Double.init))
                add(\.imagesPerSecond, r.imagesPerSecond)
            case .eval:
                add(\.evalAccuracy, r.evalAccuracy.map { $0 * 100 }); add(\.evalLoss, r.evalLoss)
            default:
                break
            }
        }
        // A resumed run repeats the steps after its last checkpoint: keep the later ones.
        for kp in [\TrainingCurves.loss, \.trainAccuracy, \.evalAccuracy, \.evalLoss, \.lr, \.density, \.bytesUp, \.bytesDown, \.imagesPerSecond] {
            c[keyPath: kp] = Self.lastWins(c[keyPath: kp])
        }
        return c
    }

    /// One row per step that has any value: step, wall seconds, then each quantity (empty
    /// where that step has none), for spreadsheets and pandas.
    public var csv: String {
        let columns: [(String, [Point])] = [("loss", loss), ("train_top1", trainAccuracy), ("test_top1", evalAccuracy), ("test_loss", evalLoss),
                                            ("lr", lr), ("density", density), ("bytes_up_per_step", bytesUp),
                                            ("bytes_down_per_step", bytesDown), ("images_per_second", imagesPerSecond)]
        var rows: [Double: (seconds: Double, values: [String])] = [:]
        for (k, (_, points)) in columns.enumerated() {
            for p in points {
                var row = rows[p.step] ?? (p.seconds, [String](repeating: "", count: columns.count))
                row.values[k] = "\(p.value)"
                row.seconds = max(row.seconds, p.seconds)
                rows[p.step] = row
            }
        }
        var out = "step,seconds," + columns.map(\.0).joined(separator: ",") + "\n"
        for step in rows.keys.sorted() {
            let r = rows[step]!
            out += "\(Int(step)),\(String(format: "%.3f", r.seconds)),\(r.values.joined(separator: ","))\n"
        }
        return out
    }

    /// Points in step order, the last one written for a step winning.
    static func lastWins(_ points: [Point]) -> [Point] {
        var byStep: [Double: Point] = [:]
        for p in points { byStep[p.step] = p }
        return byStep.values.sorted { $0.step < $1.step }
    }
}

public struct CurvesError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
