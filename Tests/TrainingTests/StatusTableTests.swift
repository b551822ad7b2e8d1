import Coordinator
import Foundation
import Testing

@Suite("status table")
struct StatusTableTests {
    func document(step: Int?, state: String, speeds: [Double]) throws -> StatusDocument {
        let workers = speeds.enumerated().map { k, s in
            """
            {"id": "w\(k)", "rank": \(k), "host": "h", "pid": 1, "threads": 2, "state": "ready", "seconds_since_heard": 0.2,
             "steps_done": 10, "refused": 0, "joins": 1, "share": 32, "images_per_second": \(s), "bytes_up": 100, "bytes_down": 200}
            """
        }
        let stepField = step.map { "\"step\": \($0), \"loss\": 1.5, " } ?? ""
        let json = "{\"run_id\": \"ab\", \"state\": \"\(state)\", \(stepField)\"total_steps\": 100, \"workers\": [\(workers.joined(separator: ","))]}"
        return try StatusDocument.decode(Data(json.utf8))
    }

    /// Before the first step the table says it is waiting and who has joined, not "loss nan
    /// 0 img/s"; once training, a worker at under two thirds of the median speed is marked
    /// a straggler and the others are not.
    @Test func waitingAndStragglersAreSaid() throws {
        let waiting = StatusTable.render(try document(step: nil, state: "starting", speeds: [0]))
        #expect(waiting.contains("waiting for workers: 1 joined") && !waiting.contains("nan"), "\(waiting)")
        let even = StatusTable.render(try document(step: 5, state: "training", speeds: [100, 95, 110]))
        #expect(!even.contains("straggler") && even.contains("step 5/100"), "\(even)")
        let slow = try document(step: 5, state: "training", speeds: [100, 40, 110])
        let table = StatusTable.render(slow)
        let marked = table.split(separator: "\n").filter { $0.contains("straggler") }
        #expect(marked.count == 1 && marked[0].contains("w1") && marked[0].contains("0.40×"), "\(table)")
        #expect(StatusTable.stragglers(slow.workers!).keys.sorted() == ["w1"])
        #expect(StatusTable.stragglers(try document(step: 5, state: "training", speeds: [10]).workers!).isEmpty)
    }
}
