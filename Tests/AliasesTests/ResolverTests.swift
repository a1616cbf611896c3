import Foundation
import Testing

@testable import Aliases

/// Builds a resolver for domain "dom" (and "other") from aliases-file text.
func makeResolver(
    _ text: String,
    users: Set<String> = [],
    rules: AliasRules = AliasRules(),
    hook: Resolver.Hook? = nil
) throws -> Resolver {
    let aliases = try AliasesFile.parse(text, domain: "dom", rules: rules, path: "aliases")
    return Resolver(rules: rules, localDomains: ["dom", "other"], aliases: aliases, hook: hook) { user, domain in
        users.contains(user + "@" + domain)
    }
}

@Suite struct ResolverTests {
    @Test func nonLocalAddressesAreReturnedAsIs() async throws {
        let r = try makeResolver("a: b")
        #expect(try await r.resolve("A.B+c@remote.org") == [Recipient("A.B+c@remote.org")])
    }

    @Test func chainsResolveRecursively() async throws {
        let r = try makeResolver("a: b\nb: c, d@other\nc: |cmd")
        #expect(try await r.resolve("a@dom") == [Recipient("cmd", kind: .pipe), Recipient("d@other")])
    }

    /// The example from chasquid's documentation (COMPAT.md §9.2).
    @Test func documentedSuffixAndDropExample() async throws {
        let r = try makeResolver("juana.perez: juana\njuana.perez+fruta: fruta")
        #expect(try await r.resolve("juanaperez@dom") == [Recipient("juana@dom")])
        #expect(try await r.resolve("ju.ana.pe.rez@dom") == [Recipient("juana@dom")])
        #expect(try await r.resolve("juana.perez+abc@dom") == [Recipient("juana@dom")])
        #expect(try await r.resolve("juanaperez+fruta@dom") == [Recipient("fruta@dom")])
    }

    @Test func unknownAddressesComeBackCleaned() async throws {
        let r = try makeResolver("x: y")
        #expect(try await r.resolve("Some.One+tag@dom") == [Recipient("someone@dom")])
    }

    @Test func catchAllCatchesOnlyUnknownUsers() async throws {
        let r = try makeResolver("*: catcher@other\nknown: real\nunknowntarget: k", users: ["real@dom"])
        #expect(try await r.resolve("stranger@dom") == [Recipient("catcher@other")])
        #expect(try await r.resolve("known@dom") == [Recipient("real@dom")])
        // An alias to a missing user goes on to the catch-all too.
        #expect(try await r.resolve("unknowntarget@dom") == [Recipient("catcher@other")])
        #expect(try await r.resolve("real@dom") == [Recipient("real@dom")])
        // chasquid 1.18 sent these to the catch-all; a real user's tagged or
        // dotted address is that user's (COMPAT.md §22.6).
        #expect(try await r.resolve("real+tag@dom") == [Recipient("real@dom")])
        #expect(try await r.resolve("re.al@dom") == [Recipient("real@dom")])
    }

    @Test func starTargetKeepsTheUserAsWritten() async throws {
        let r = try makeResolver("*: *@remote.org")
        #expect(try await r.resolve("Who.Ever+x@dom") == [Recipient("Who.Ever+x@remote.org")])
        // "a: b" plus "*: *@remote" sends a@d to b@remote when b is not a user.
        let chained = try makeResolver("a: b\n*: *@remote")
        #expect(try await chained.resolve("a@dom") == [Recipient("b@remote")])
    }

    @Test func forwardsAreNotResolvedFurther() async throws {
        let r = try makeResolver("a: b via mx.example\nb: c")
        #expect(try await r.resolve("a@dom") == [Recipient("b@dom", kind: .forward, via: ["mx.example"])])
        let star = try makeResolver("*: *@remote via smart")
        #expect(try await star.resolve("x@dom") == [Recipient("x@remote", kind: .forward, via: ["smart"])])
    }

    @Test func nineExpansionsSucceedAndTenFail() async throws {
        let nine = (0..<9).map { "a\($0): a\($0 + 1)" }.joined(separator: "\n")
        #expect(try await makeResolver(nine).resolve("a0@dom") == [Recipient("a9@dom")])
        let ten = (0..<10).map { "a\($0): a\($0 + 1)" }.joined(separator: "\n")
        await #expect(throws: ResolveError.recursionLimitExceeded) { try await makeResolver(ten).resolve("a0@dom") }
        await #expect(throws: ResolveError.recursionLimitExceeded) { try await makeResolver("a: b\nb: a").resolve("a@dom") }
    }

    @Test func suffixSeparatorsAndDropCharactersAreConfigurable() async throws {
        let rules = AliasRules(suffixSeparators: "-", dropCharacters: "")
        let r = try makeResolver("a.b: target", rules: rules)
        #expect(try await r.resolve("a.b-tag@dom") == [Recipient("target@dom")])
        #expect(try await r.resolve("ab@dom") == [Recipient("ab@dom")])
    }

    @Test func existence() async throws {
        let r = try makeResolver("alias: x", users: ["user@dom"])
        #expect(try await r.exists("alias@dom"))
        #expect(try await r.exists("Ali.as+tag@dom"))
        #expect(try await r.exists("us.er+tag@dom"))
        #expect(try await !r.exists("nobody@dom"))
        let withCatchAll = try makeResolver("*: x")
        #expect(try await withCatchAll.exists("nobody@dom"))
    }

    @Test func aFailingUserCheckFailsTheResolution() async throws {
        struct Down: Error {}
        let r = Resolver(rules: AliasRules(), localDomains: ["dom"], aliases: [:]) { _, _ in throw Down() }
        await #expect(throws: ResolveError.self) { try await r.resolve("a@dom") }
    }
}

@Suite struct HookTests {
    func script(_ body: String) throws -> String {
        let path = NSTemporaryDirectory() + "alias-resolve-" + UUID().uuidString
        try ("#!/bin/sh\n" + body + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return path
    }

    @Test func hookResultsAreAppendedToStaticOnes() async throws {
        let hook = ResolveHook(path: try script("""
            case "$1" in
              a@dom) echo " hooked@remote, | /bin/true " ;;
              *) echo "" ;;
            esac
            """))
        // A pipe item in a list is just an address: the hook's output is one right-hand side.
        let r = try makeResolver("a: static@remote", hook: hook.asResolverHook)
        await #expect(throws: ResolveError.self) { try await r.resolve("a@dom") }

        let good = ResolveHook(path: try script(#"[ "$1" = "a@dom" ] && echo "hooked@remote, other-user"; exit 0"#))
        let r2 = try makeResolver("a: static@remote", hook: good.asResolverHook)
        #expect(try await r2.resolve("a@dom") == [Recipient("static@remote"), Recipient("hooked@remote"), Recipient("other-user@dom")])
    }

    @Test func theHookSeesTheUnmodifiedAddress() async throws {
        let log = NSTemporaryDirectory() + "hook-log-" + UUID().uuidString
        let hook = ResolveHook(path: try script("echo \"$1\" >> \(log)"))
        let r = try makeResolver("", hook: hook.asResolverHook)
        _ = try await r.resolve("Us.Er+Tag@dom")
        let seen = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        // Exact lookup, cleaned lookup, then the catch-all.
        #expect(seen == ["Us.Er+Tag@dom", "user@dom", "*@dom"])
    }

    @Test func aFailingHookFailsTheResolution() async throws {
        let hook = ResolveHook(path: try script("exit 1"))
        // Go's exec error, as chasquid-util then shows it after "Error resolving: ".
        await #expect(throws: ResolveHook.Failure(description: "exit status 1")) { try await hook.run("a@dom") }
        let r = try makeResolver("a: b", hook: hook.asResolverHook)
        await #expect(throws: ResolveError.self) { try await r.resolve("a@dom") }
        // At RCPT time a failing hook only makes that lookup find nothing.
        #expect(try await !r.exists("a@dom"))
    }

    @Test func unparsableOutputFailsTheResolution() async throws {
        let hook = ResolveHook(path: try script("echo 'x via '"))
        await #expect(throws: ResolveError.self) { try await makeResolver("", hook: hook.asResolverHook).resolve("a@dom") }
    }

    @Test func aSlowHookIsKilled() async throws {
        let hook = ResolveHook(path: try script("sleep 120"), timeout: .milliseconds(300))
        let start = ContinuousClock.now
        await #expect(throws: ResolveHook.Failure(description: "signal: killed")) { try await hook.run("a@dom") }
        #expect(ContinuousClock.now - start < .seconds(60))
    }

    @Test func aMissingHookIsSkipped() async throws {
        let hook = ResolveHook(path: "/nonexistent/alias-resolve")
        #expect(try await hook.run("a@dom") == [])
    }
}
