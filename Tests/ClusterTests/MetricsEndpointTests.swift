import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Monitoring
import Testing
import TestSupport
@testable import Coordinator
@testable import Training
import Core
import Model

extension ClusterTests {
    /// GET /metrics on a running coordinator answers Prometheus text: every sample line
    /// parses (name, optional labels, a number), each metric has HELP and TYPE, the step
    /// and the ready worker are there; another path is 404.
    @Test func prometheusTextIsServedOverHTTP() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 256, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=100000", "training.batch_size=16"])
            let source = try cluster(config, workers: 1, timeout: 3)
            // As svite train wires it: the trainer's events make the run's part of the document.
            let status = RunStatus(config: config, parameters: 1)
            source.runStatus = status
            let endpoint = try MetricsEndpoint(address: "127.0.0.1:0") { [weak source] in source?.statusSnapshot }
            defer { endpoint.stop() }
            let worker = workerThread(source.endpoint, name: "w")
            let stop = StopFlag()
            let box = TrainerBox(try trainer(config, dir: "\(dir)/run", source: source))
            let runner = Thread { _ = try? box.trainer.run(stop: stop) { status.observe($0) } }
            runner.start()
            defer {
                stop.raise()
                while runner.isExecuting || worker.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
            }
            var text = "", code = 0
            let deadline = Date().addingTimeInterval(30)
            repeat {
                Thread.sleep(forTimeInterval: 0.3)
                (code, text) = try get(endpoint.url)
            } while !(code == 200 && text.contains("svite_step ") && text.contains("svite_workers{state=\"ready\"} 1")) && Date() < deadline
            #expect(code == 200, "\(code): \(text.prefix(300))")
            var described = Set<String>(), typed = Set<String>(), samples: [String: Double] = [:]
            for line in text.split(separator: "\n") {
                if line.hasPrefix("# HELP ") { described.insert(String(line.split(separator: " ")[2])); continue }
                if line.hasPrefix("# TYPE ") { typed.insert(String(line.split(separator: " ")[2])); continue }
                let parts = line.split(separator: " ")
                let name = String(parts[0].prefix { $0 != "{" })
                #expect(parts.count == 2 && Double(parts[1]) != nil, "not a sample: \(line)")
                #expect(name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" } && name.hasPrefix("svite_"), "\(line)")
                samples[String(parts[0])] = Double(parts[1])
                #expect(described.contains(name) && typed.contains(name), "\(name) has no HELP/TYPE")
            }
            #expect((samples["svite_step"] ?? -1) >= 1 && samples["svite_workers{state=\"ready\"}"] == 1, "\(samples.keys.sorted())")
            #expect(samples.keys.contains { $0.hasPrefix("svite_worker_images_per_second{worker=\"w\"") })
            #expect(try get(endpoint.url.replacingOccurrences(of: "/metrics", with: "/other")).0 == 404)
        }
    }

    func get(_ url: String) throws -> (Int, String) {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: (Int, String) = (0, "")
        let task = URLSession.shared.dataTask(with: URL(string: url)!) { data, response, _ in
            result = ((response as? HTTPURLResponse)?.statusCode ?? 0, data.map { String(decoding: $0, as: UTF8.self) } ?? "")
            done.signal()
        }
        task.resume()
        _ = done.wait(timeout: .now() + 10)
        return result
    }
}
