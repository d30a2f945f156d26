import LodeCore
import LodeStore
import LodeTestSupport
import Testing

/// `CommitVerifier`, the one judge of commits from elsewhere, case by case.
@Suite struct CommitVerifierTests {
    let alpha = site(1, "alpha")
    let beta = site(2, "beta")
    let hlc = HLC(millis: 1_780_000_000_000, counter: 0)

    func put(_ table: String = "t", _ pk: String = "k", columns: [String] = ["a"], _ values: [Value] = [.integer(1)]) -> Op {
        var p = PutRows(table: table, columns: columns)
        p.append(key: pk, length: 1, values: values)
        return .put(p)
    }

    func record(_ s: LocalSite, role: Role? = .editor, from: UInt64? = nil, until: UInt64? = nil) -> SiteRecord {
        SiteRecord(site: s.site, name: s.name, role: role, certificate: nil, validFrom: from, validUntil: until)
    }

    func verify(
        _ c: Commit, head: FeedHead = .empty, held: VersionVector = VersionVector(), author: SiteRecord?, heldHash: [UInt8]? = nil,
        now: UInt64? = nil
    ) -> CommitVerifier.Verdict {
        CommitVerifier.verify(c, dataset: "d", head: head, held: held, author: author, now: now ?? hlc.millis, heldHash: { _ in heldHash })
    }

    @Test func aCommitStampedBeyondTheDriftIsHeldAndAppliesOnceTheClockCatchesUp() throws {
        let drift = CommitVerifier.defaultMaxClockDrift
        let c = try alpha.writer.commit(dataset: "d", ops: [put()], hlc: hlc, head: .empty, held: VersionVector())
        let applies = CommitVerifier.Verdict.apply(past: VersionVector([alpha.site: 1]))
        #expect(verify(c, author: record(alpha), now: hlc.millis - drift - 1) == .clockAhead)
        #expect(verify(c, author: record(alpha), now: hlc.millis - drift) == applies)
        #expect(verify(c, author: record(alpha), now: hlc.millis) == applies)
        // A clock near the end of time neither traps nor holds anything.
        #expect(verify(c, author: record(alpha), now: .max) == applies)
        // The signature is judged first: a forged stamp is not merely early.
        var bytes = c.bytes
        bytes[bytes.count - 1] ^= 1
        guard case .reject(.badSignature, _) = verify(try Commit(decoding: bytes), author: record(alpha), now: 0) else {
            Issue.record("a forged far-future commit is not refused for its signature")
            return
        }
    }

    @Test func aGoodCommitAppliesWithItsCausalPast() throws {
        let c = try alpha.writer.commit(dataset: "d", ops: [put()], hlc: hlc, head: .empty, held: VersionVector([beta.site: 3]))
        #expect(verify(c, held: VersionVector([beta.site: 3]), author: record(alpha)) == .apply(past: VersionVector([alpha.site: 1, beta.site: 3])))
    }

    @Test func anotherDatasetIsInvalid() throws {
        let c = try alpha.writer.commit(dataset: "other", ops: [put()], hlc: hlc, head: .empty, held: VersionVector())
        guard case .reject(.invalid, let reason) = verify(c, author: record(alpha)) else { Issue.record("not rejected"); return }
        #expect(reason.contains("dataset other"))
    }

    @Test func aHeldSeqIsADuplicateOrAFork() throws {
        let c = try alpha.writer.commit(dataset: "d", ops: [put()], hlc: hlc, head: .empty, held: VersionVector())
        let head = FeedHead(seq: 1, hash: c.hash, vector: VersionVector([alpha.site: 1]))
        #expect(verify(c, head: head, author: record(alpha), heldHash: c.hash) == .duplicate)
        #expect(verify(c, head: head, author: record(alpha), heldHash: nil) == .duplicate)
        // Another commit with the same seq, validly signed: a fork.
        let other = try alpha.writer.commit(dataset: "d", ops: [put("t", "x")], hlc: hlc, head: .empty, held: VersionVector())
        guard case .reject(.forkedFeed, _) = verify(other, head: head, author: record(alpha), heldHash: c.hash) else {
            Issue.record("a fork is not refused as one")
            return
        }
        // The same with a broken signature is not evidence of anything but tampering.
        var bytes = other.bytes
        bytes[bytes.count - 1] ^= 1
        guard case .reject(.badSignature, _) = verify(try Commit(decoding: bytes), head: head, author: record(alpha), heldHash: c.hash) else {
            Issue.record("a tampered copy is not refused for its signature")
            return
        }
    }

    @Test func aGapOrAMissingDependencyOrAnUnknownAuthorWaits() throws {
        let first = try alpha.writer.commit(dataset: "d", ops: [put()], hlc: hlc, head: .empty, held: VersionVector())
        let second = try alpha.writer.commit(
            dataset: "d", ops: [put()], hlc: hlc, head: FeedHead(seq: 1, hash: first.hash, vector: VersionVector([alpha.site: 1])),
            held: VersionVector([alpha.site: 1]))
        #expect(verify(second, author: record(alpha)) == .wait)
        let dependent = try alpha.writer.commit(dataset: "d", ops: [put()], hlc: hlc, head: .empty, held: VersionVector([beta.site: 2]))
        #expect(verify(dependent, author: record(alpha)) == .wait)
        #expect(verify(first, author: nil) == .wait)
        #expect(verify(first, author: record(alpha, role: nil)) == .wait)
    }

    @Test func aWrongPreviousHashIsAFork() throws {
        let first = try alpha.writer.commit(dataset: "d", ops: [put()], hlc: hlc, head: .empty, held: VersionVector())
        let second = try alpha.writer.commit(
            dataset: "d", ops: [put()], hlc: hlc, head: FeedHead(seq: 1, hash: [UInt8](repeating: 9, count: 32), vector: VersionVector()),
            held: VersionVector())
        guard case .reject(.forkedFeed, _) = verify(second, head: FeedHead(seq: 1, hash: first.hash, vector: VersionVector()), author: record(alpha))
        else {
            Issue.record("a wrong previous hash is not refused")
            return
        }
    }

    @Test func aBadSignatureIsRefused() throws {
        let c = try alpha.writer.commit(dataset: "d", ops: [put()], hlc: hlc, head: .empty, held: VersionVector())
        var bytes = c.bytes
        bytes[bytes.count - 10] ^= 0x40
        guard case .reject(.badSignature, _) = verify(try Commit(decoding: bytes), author: record(alpha)) else {
            Issue.record("not refused")
            return
        }
    }

    @Test func aCommitOutsideItsCertificateIsNotAuthorized() throws {
        let c = try alpha.writer.commit(dataset: "d", ops: [put()], hlc: hlc, head: .empty, held: VersionVector())
        let millis = hlc.millis
        let hour = CommitVerifier.validitySlackMillis
        // Within the hour of slack either side: fine.
        #expect(verify(c, author: record(alpha, from: millis + hour - 1)) == .apply(past: VersionVector([alpha.site: 1])))
        #expect(verify(c, author: record(alpha, until: millis - hour + 1)) == .apply(past: VersionVector([alpha.site: 1])))
        guard case .reject(.notAuthorized, let early) = verify(c, author: record(alpha, from: millis + hour + 1)),
            case .reject(.notAuthorized, let late) = verify(c, author: record(alpha, until: millis - hour - 1))
        else {
            Issue.record("a commit outside the validity window applies")
            return
        }
        #expect(early.contains("before") && late.contains("expired"))
    }

    @Test func eachRoleWritesOnlyWhatItMay() throws {
        let define = Op.defineTable(TableDef(name: "t", primaryKey: "id", columns: []))
        let note = put("_annotations", AnnotationRows.id(hlc: hlc, site: alpha.site), columns: ["body", "author"], [.text("x"), .text("alpha")])
        for (role, op, allowed) in [
            (Role.editor, put(), true), (.editor, define, true), (.annotator, note, true), (.annotator, put(), false),
            (.annotator, define, false), (.reader, note, false), (.relay, put(), false),
        ] {
            let c = try alpha.writer.commit(dataset: "d", ops: [op], hlc: hlc, head: .empty, held: VersionVector())
            let v = verify(c, author: record(alpha, role: role))
            if allowed {
                #expect(v == .apply(past: VersionVector([alpha.site: 1])), "\(role) \(op.table)")
            } else {
                guard case .reject(.notAuthorized, _) = v else {
                    Issue.record("\(role) may write \(op.table)")
                    continue
                }
            }
        }
    }

    /// DESIGN §9: an annotation is edited only by its author's site; any
    /// site that may annotate may resolve or reopen it.
    @Test func anAnnotationIsEditedOnlyByItsAuthorsSite() throws {
        let id = AnnotationRows.id(hlc: hlc, site: alpha.site)
        let legacy = String(hlc.rawValue, radix: 16) + alpha.site.hex.prefix(4)
        func del(_ table: String, _ key: String) -> Op {
            var d = DeleteRows(table: table)
            d.append(key: key, length: 2)
            return .delete(d)
        }
        let cases: [(LocalSite, Op, RejectionKind?)] = [
            (alpha, put("_annotations", id, columns: ["body"], [.text("edited")]), nil),
            (alpha, del("_annotations", id), nil),
            (alpha, put("_annotation_tags", "\(id):x", columns: ["annotation_id", "tag"], [.text(id), .text("x")]), nil),
            (beta, put("_annotations", id, columns: ["status"], [.text("resolved")]), nil),
            (beta, put("_annotations", id, columns: ["status"], [.text("open")]), nil),
            (beta, put("_annotations", legacy, columns: ["status"], [.text("resolved")]), nil),
            (beta, put("_annotations", id, columns: ["body"], [.text("rewritten")]), .notAuthorized),
            (beta, put("_annotations", id, columns: ["status", "body"], [.text("resolved"), .text("x")]), .notAuthorized),
            (beta, put("_annotations", id, columns: ["status"], [.text("deleted")]), .notAuthorized),
            (beta, put("_annotations", legacy, columns: ["body"], [.text("rewritten")]), .notAuthorized),
            (beta, del("_annotations", id), .notAuthorized),
            (beta, put("_annotation_tags", "\(id):spam", columns: ["annotation_id", "tag"], [.text(id), .text("spam")]), .notAuthorized),
            (beta, del("_annotation_tags", "\(id):x"), .notAuthorized),
            // A tag under its own key naming someone else's annotation.
            (
                beta,
                put(
                    "_annotation_tags", "\(AnnotationRows.id(hlc: hlc, site: beta.site)):x", columns: ["annotation_id", "tag"],
                    [.text(id), .text("x")]),
                .invalid
            ),
        ]
        for (author, op, refusal) in cases {
            let c = try author.writer.commit(dataset: "d", ops: [op], hlc: hlc, head: .empty, held: VersionVector())
            let v = verify(c, author: record(author, role: .annotator))
            if let refusal {
                guard case .reject(refusal, _) = v else {
                    Issue.record("\(author.name) may \(op) (\(v))")
                    continue
                }
            } else {
                #expect(v == .apply(past: VersionVector([author.site: 1])), "\(author.name) \(op)")
            }
        }
    }

    @Test func reservedTablesAndForgedAnnotationAuthorsAreInvalid() throws {
        let reserved = Op.defineTable(TableDef(name: "_mine", primaryKey: "id", columns: []))
        let forged = put("_annotations", AnnotationRows.id(hlc: hlc, site: alpha.site), columns: ["body", "author"], [.text("x"), .text("beta")])
        for op in [reserved, forged] {
            let c = try alpha.writer.commit(dataset: "d", ops: [op], hlc: hlc, head: .empty, held: VersionVector())
            guard case .reject(.invalid, _) = verify(c, author: record(alpha)) else {
                Issue.record("\(op.table) is not refused")
                continue
            }
        }
    }
}
