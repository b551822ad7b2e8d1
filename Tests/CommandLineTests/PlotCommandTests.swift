import Foundation
import Logging
import Testing
import TestSupport
@testable import Training

@Suite("svite plot")
struct PlotCommandTests {
    let log = Logger(label: "test")

    /// A finished run's metrics become curves (one loss point per train record, one test
    /// accuracy per evaluation, wall time rising), and `svite plot` draws two runs into PNG
    /// and SVG files of every chart; a directory without metrics is a clear error.
    @Test func aRunsCurvesAreDrawn() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 128, test: 32)
            for name in ["a", "b"] {
                let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=2", "training.log_every_steps=4"])
                _ = try Trainer(config: config, options: Trainer.Options(runDirectory: "\(dir)/\(name)"), logger: log).run()
            }
            let c = try TrainingCurves.load("\(dir)/a")
            let records = MetricsLog.read("\(dir)/a/metrics.jsonl")
            #expect(c.name == "a" && c.loss.count == records.filter { $0.kind == .train }.count && c.evalAccuracy.count == 2)
            #expect(zip(c.loss, c.loss.dropFirst()).allSatisfy { $0.step < $1.step && $0.seconds <= $1.seconds })
            #expect(c.evalAccuracy.allSatisfy { $0.value >= 0 && $0.value <= 100 })
            #expect(throws: CurvesError.self) { try TrainingCurves.load("\(dir)/nowhere") }
            // The CSV: a header, then one row per step with a value, each with every column.
            let rows = c.csv.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false) }
            #expect(rows[0].prefix(3) == ["step", "seconds", "loss"] && rows.dropFirst().allSatisfy { $0.count == rows[0].count })
            #expect(rows.count - 1 == Set(c.loss.map(\.step) + c.evalAccuracy.map(\.step)).count)

            let exe = try sviteBinary()
            let out = Pipe()
            let p = try startSvite(exe, ["plot", "\(dir)/a", "\(dir)/b", "--out", "\(dir)/plots", "--csv"], output: out)
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "\(text)")
            for chart in ["loss", "accuracy", "lr", "throughput"] {
                for ext in ["png", "svg"] {
                    let size = (try? FileManager.default.attributesOfItem(atPath: "\(dir)/plots/\(chart).\(ext)")[.size] as? Int) ?? 0
                    #expect(size > 1000, "\(chart).\(ext): \(size) bytes")
                }
            }
            #expect(FileManager.default.fileExists(atPath: "\(dir)/plots/a.csv") && FileManager.default.fileExists(atPath: "\(dir)/plots/b.csv"))
            let bad = try startSvite(exe, ["plot", "\(dir)/nowhere"])
            bad.waitUntilExit()
            #expect(bad.terminationStatus == 1)
        }
    }
}
