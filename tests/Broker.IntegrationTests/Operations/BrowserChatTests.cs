using System.Diagnostics;
using System.Net;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Packets;

namespace Broker.IntegrationTests.Operations;

/// <summary>
/// Issue #7 item 2: the browser chat page (/chat, MQTT.js over ws://host/mqtt) in a real headless Chromium,
/// driven over the DevTools protocol, chatting with an MQTTnet client: 1:1, group and P2P; presence dots and
/// delivered ticks (contract §10, §11).
/// </summary>
public sealed class BrowserChatTests
{
    [Fact]
    public async Task ChatPage_AndMqttJs_AreServedByTheBroker()
    {
        await using var broker = await TestBroker.StartImsAsync();
        using var http = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false }) { BaseAddress = new Uri($"http://127.0.0.1:{broker.HttpPort}") };

        foreach (var path in new[] { "/chat", "/chat/" })
        {
            var redirect = await http.GetAsync(path);
            Assert.Equal(HttpStatusCode.Redirect, redirect.StatusCode);
            Assert.Equal("/chat/index.html", redirect.Headers.Location?.OriginalString);
        }

        var page = await http.GetAsync("/chat/index.html");
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
        var html = await page.Content.ReadAsStringAsync();
        Assert.Contains("../lib/mqtt.min.js", html);
        Assert.Contains("chat.js", html);

        var mqttJs = await http.GetAsync("/lib/mqtt.min.js");
        Assert.Equal(HttpStatusCode.OK, mqttJs.StatusCode);
        Assert.Equal("text/javascript", mqttJs.Content.Headers.ContentType?.MediaType);
        Assert.StartsWith("\"use strict\";var mqtt=", await mqttJs.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/chat/chat.js")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/chat/chat.css")).StatusCode);
    }

    [Fact]
    public async Task BrowserAlice_ChatsWithMqttnetBob_Direct_Group_AndP2P()
    {
        if (!Chromium.Require())
        {
            return;
        }

        var started = Stopwatch.StartNew();
        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await bob.SubscribeOkAsync("IMS/Group123/#");

        await using var browser = await Chromium.LaunchAsync();
        var page = await browser.OpenAsync($"http://127.0.0.1:{broker.HttpPort}/chat/");
        await page.WaitForAsync("document.readyState === 'complete' && typeof mqtt === 'object' && !!document.getElementById('connect')", "the page and MQTT.js to load");

        // A wrong password is refused (v5 CONNACK 0x86) and the page says so.
        await page.EvaluateAsync("fill('user', 'alice'); fill('password', 'wrong'); fill('device', 'alice-web'); click('connect')");
        await page.WaitForAsync("document.getElementById('status').dataset.state === 'error'", "the refused login to show");
        Assert.Contains("Bad User Name or Password", await page.EvaluateAsync<string>("document.getElementById('status').textContent"));

        // Alice logs in: "connected" once her inbox subscription is granted.
        await page.EvaluateAsync("fill('password', 'alice-pass'); click('connect')");
        await page.WaitForAsync("document.getElementById('status').dataset.state === 'connected'", "alice to connect and subscribe her inbox");
        Assert.Equal("connected as alice (GID_IMS@@@alice-web)", await page.EvaluateAsync<string>("document.getElementById('status').textContent"));

        // 1:1, browser → MQTTnet, with a delivered tick: none while bob's phone holds the message unacknowledged
        // (the PUBACK to alice, "out", comes first), the tick once it acknowledges (TestClient acks on read).
        await page.EvaluateAsync("fill('dm-to', 'bob'); fill('dm-text', 'hi bob, from the browser'); click('dm-send')");
        await page.WaitForRowAsync("out", "IMS/bob/Inbox/Msg/alice", "hi bob, from the browser");
        var sentRow = RowJs("out", "IMS/bob/Inbox/Msg/alice", "hi bob, from the browser");
        Assert.Equal("", await page.EvaluateAsync<string>(sentRow + ".querySelector('td.receipt').textContent"));
        var dm = await bob.NextAsync();
        AssertReceived(dm, "IMS/bob/Inbox/Msg/alice", "hi bob, from the browser", "alice");
        Assert.Contains(("ims-receipt", "delivered"), dm.ApplicationMessage.UserProperties.Select(p => (p.Name, p.ReadValueAsString())));
        await page.WaitForAsync(sentRow + ".querySelector('td.receipt').textContent === '✓'", "the delivered tick on the message to bob");
        Assert.Equal("delivered to GID_IMS@@@bob-phone", (await page.EvaluateAsync<string>(sentRow + ".querySelector('td.receipt').title")).Split(" (")[0]);

        // Presence: writing to bob put him in People, online (his phone is connected).
        await page.WaitForAsync(PeerJs("bob") + "?.dataset.online === 'true'", "bob's dot to show online");
        Assert.Equal("online: GID_IMS@@@bob-phone", await page.EvaluateAsync<string>(PeerJs("bob") + ".title"));

        // Carol, watched before she ever connects: her dot turns online when she connects, offline (with the
        // time she was last seen) when she disconnects.
        await page.EvaluateAsync("fill('peer', 'carol'); click('peer-add')");
        await page.WaitForAsync(PeerJs("carol") + "?.dataset.online === 'unknown'", "carol's dot");
        await using (await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol"))
        {
            await page.WaitForAsync(PeerJs("carol") + ".dataset.online === 'true'", "carol's dot to turn online");
        }

        await page.WaitForAsync(PeerJs("carol") + ".dataset.online === 'false'", "carol's dot to turn offline");
        Assert.StartsWith("offline, last seen ", await page.EvaluateAsync<string>(PeerJs("carol") + ".title"));
        Assert.Equal("true", await page.EvaluateAsync<string>(PeerJs("bob") + ".dataset.online"));

        // 1:1 and P2P, MQTTnet → browser (P2P without any subscription of the page's).
        await bob.PublishAsync("IMS/alice/Inbox/Msg/bob", "hi alice");
        await bob.PublishAsync("IMS/p2p/GID_IMS@@@alice-web", "to your browser only");
        Assert.Equal("bob", await page.WaitForRowAsync("in", "IMS/alice/Inbox/Msg/bob", "hi alice"));
        Assert.Equal("bob", await page.WaitForRowAsync("in", "IMS/p2p/GID_IMS@@@alice-web", "to your browser only"));

        // P2P, browser → MQTTnet.
        await page.EvaluateAsync("fill('p2p-target', 'GID_IMS@@@bob-phone'); fill('p2p-text', 'to your phone only'); click('p2p-send')");
        AssertReceived(await bob.NextAsync(), "IMS/p2p/GID_IMS@@@bob-phone", "to your phone only", "alice");

        // Group: alice joins Group123 in the page, both sides talk.
        await page.EvaluateAsync("fill('group', 'Group123'); click('group-join-button')");
        await page.WaitForAsync("document.getElementById('group-state').textContent === 'joined Group123'", "the group subscription");
        await page.EvaluateAsync("fill('group-text', 'hello group'); click('group-send')");
        AssertReceived(await bob.NextAsync(), "IMS/Group123/alice", "hello group", "alice");
        await bob.PublishAsync("IMS/Group123/bob", "hello alice, in the group");
        AssertReceived(await bob.NextAsync(), "IMS/Group123/bob", "hello alice, in the group", "bob"); // his own, via IMS/Group123/#
        Assert.Equal("bob", await page.WaitForRowAsync("in", "IMS/Group123/bob", "hello alice, in the group"));
        Assert.Equal("alice", await page.WaitForRowAsync("in", "IMS/Group123/alice", "hello group"));

        // Refusals show in the page: a group alice is not a member of (SUBACK 0x87), and a publish under the
        // reserved IMS/System (PUBACK 0x87).
        await page.EvaluateAsync("fill('group', 'Group999'); click('group-join-button')");
        await page.WaitForAsync("document.getElementById('group-state').textContent.startsWith('refused')", "the refused group subscription");
        await page.EvaluateAsync("fill('dm-to', 'System'); fill('dm-text', 'sneaky'); click('dm-send')");
        Assert.Equal("refused: Publish error: Not authorized", await page.WaitForRowAsync("error", "IMS/System/Inbox/Msg/alice", "sneaky"));

        Assert.False(bob.HasPending);
        Assert.Empty(page.Errors);
        Console.WriteLine($"browser chat test: {started.Elapsed.TotalSeconds:F1} s (Chromium started in {browser.StartTime.TotalSeconds:F1} s)");
    }

    static string PeerJs(string user) => $"document.querySelector('#peers li[data-user={JsonSerializer.Serialize(user)}]')";

    static string RowJs(string dir, string topic, string payload) =>
        $"[...document.querySelectorAll('#messages tr')].find(r => r.dataset.dir === {JsonSerializer.Serialize(dir)} && r.dataset.topic === {JsonSerializer.Serialize(topic)} && r.dataset.payload === {JsonSerializer.Serialize(payload)})";

    static void AssertReceived(MqttApplicationMessageReceivedEventArgs received, string topic, string payload, string sender)
    {
        Assert.Equal((topic, payload), (received.ApplicationMessage.Topic, TestClient.Text(received)));
        Assert.Contains(("ims-sender", sender), received.ApplicationMessage.UserProperties.Select(p => (p.Name, p.ReadValueAsString())));
    }

    /// <summary>
    /// Debian's headless Chromium (/usr/bin/chromium), driven through its DevTools protocol over a WebSocket:
    /// no driver binary, no npm package, nothing downloaded at run time.
    /// </summary>
    sealed class Chromium : IAsyncDisposable
    {
        const string Binary = "/usr/bin/chromium";
        static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

        readonly Process _process;
        readonly string _profile;
        readonly ClientWebSocket _socket = new();
        readonly CancellationTokenSource _stop = new();
        readonly Dictionary<int, TaskCompletionSource<JsonObject>> _pending = [];
        readonly Dictionary<string, Page> _pages = [];
        readonly StringBuilder _stderr = new();
        readonly SemaphoreSlim _sendLock = new(1, 1);
        Task _receiveLoop = Task.CompletedTask;
        int _nextId;

        Chromium(Process process, string profile)
        {
            _process = process;
            _profile = profile;
        }

        public TimeSpan StartTime { get; private set; }

        /// <summary>Skips (returns false) only outside CI; in CI a missing browser fails the test.</summary>
        public static bool Require()
        {
            if (File.Exists(Binary))
            {
                return true;
            }

            Assert.True(Environment.GetEnvironmentVariable("CI") is null, $"{Binary} must be installed in CI (.ci/run installs Debian's chromium)");
            Console.WriteLine($"{Binary} not installed: browser test skipped locally (apt-get install chromium)");
            return false;
        }

        public static async Task<Chromium> LaunchAsync()
        {
            var started = Stopwatch.StartNew();
            var profile = Directory.CreateTempSubdirectory("ims-chromium-").FullName;
            var start = new ProcessStartInfo(Binary) { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var arg in new[]
            {
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-default-apps", "--mute-audio",
                $"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank",
            })
            {
                start.ArgumentList.Add(arg);
            }

            var browser = new Chromium(Process.Start(start)!, profile);
            var endpoint = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
            browser._process.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is null)
                {
                    endpoint.TrySetException(new InvalidOperationException("chromium exited before its DevTools endpoint was up:\n" + browser.Stderr));
                    return;
                }

                lock (browser._stderr)
                {
                    browser._stderr.AppendLine(e.Data);
                }

                const string listening = "DevTools listening on ";
                if (e.Data.StartsWith(listening, StringComparison.Ordinal))
                {
                    endpoint.TrySetResult(e.Data[listening.Length..].Trim());
                }
            };
            browser._process.OutputDataReceived += (_, _) => { };
            browser._process.BeginErrorReadLine();
            browser._process.BeginOutputReadLine();
            try
            {
                var url = await endpoint.Task.WaitAsync(Timeout);
                await browser._socket.ConnectAsync(new Uri(url), CancellationToken.None).WaitAsync(Timeout);
                browser._receiveLoop = Task.Run(browser.ReceiveLoopAsync);
            }
            catch (Exception ex) when (ex is TimeoutException or WebSocketException)
            {
                await browser.DisposeAsync();
                throw new InvalidOperationException("chromium did not open its DevTools endpoint:\n" + browser.Stderr, ex);
            }

            browser.StartTime = started.Elapsed;
            return browser;
        }

        string Stderr
        {
            get
            {
                lock (_stderr)
                {
                    return _stderr.ToString();
                }
            }
        }

        /// <summary>A new tab on <paramref name="url"/>, attached with its own flat session.</summary>
        public async Task<Page> OpenAsync(string url)
        {
            var target = await SendAsync("Target.createTarget", new JsonObject { ["url"] = "about:blank" });
            var attached = await SendAsync("Target.attachToTarget", new JsonObject { ["targetId"] = (string)target["targetId"]!, ["flatten"] = true });
            var page = new Page(this, (string)attached["sessionId"]!);
            lock (_pages)
            {
                _pages[page.SessionId] = page;
            }

            await page.SendAsync("Runtime.enable");
            await page.SendAsync("Page.enable");
            await page.SendAsync("Page.addScriptToEvaluateOnNewDocument", new JsonObject { ["source"] = Page.Helpers });
            var navigated = await page.SendAsync("Page.navigate", new JsonObject { ["url"] = url });
            if (navigated["errorText"] is JsonNode error)
            {
                throw new InvalidOperationException($"navigating to {url} failed: {error}");
            }

            return page;
        }

        internal async Task<JsonObject> SendAsync(string method, JsonObject? parameters = null, string? sessionId = null)
        {
            var id = Interlocked.Increment(ref _nextId);
            var reply = new TaskCompletionSource<JsonObject>(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (_pending)
            {
                _pending[id] = reply;
            }

            var message = new JsonObject { ["id"] = id, ["method"] = method, ["params"] = parameters ?? [] };
            if (sessionId is not null)
            {
                message["sessionId"] = sessionId;
            }

            await _sendLock.WaitAsync();
            try
            {
                await _socket.SendAsync(Encoding.UTF8.GetBytes(message.ToJsonString()), WebSocketMessageType.Text, true, _stop.Token);
            }
            finally
            {
                _sendLock.Release();
            }

            JsonObject answer;
            try
            {
                answer = await reply.Task.WaitAsync(Timeout);
            }
            catch (TimeoutException)
            {
                throw new TimeoutException($"DevTools gave no answer to {method} within {Timeout.TotalSeconds} s");
            }

            if (answer["error"] is JsonNode failure)
            {
                throw new InvalidOperationException($"DevTools {method} failed: {failure.ToJsonString()}");
            }

            return answer["result"] as JsonObject ?? [];
        }

        async Task ReceiveLoopAsync()
        {
            var buffer = new byte[64 * 1024];
            using var message = new MemoryStream();
            try
            {
                while (_socket.State == WebSocketState.Open)
                {
                    var result = await _socket.ReceiveAsync(buffer, _stop.Token);
                    if (result.MessageType == WebSocketMessageType.Close)
                    {
                        break;
                    }

                    message.Write(buffer, 0, result.Count);
                    if (!result.EndOfMessage)
                    {
                        continue;
                    }

                    var json = JsonNode.Parse(message.ToArray())!.AsObject();
                    message.SetLength(0);
                    if (json["id"] is JsonNode idNode)
                    {
                        TaskCompletionSource<JsonObject>? reply;
                        lock (_pending)
                        {
                            _pending.Remove((int)idNode, out reply);
                        }

                        reply?.TrySetResult(json);
                    }
                    else if (json["sessionId"] is JsonNode session)
                    {
                        Page? page;
                        lock (_pages)
                        {
                            _pages.TryGetValue((string)session!, out page);
                        }

                        page?.OnEvent((string)json["method"]!, json["params"] as JsonObject ?? []);
                    }
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or WebSocketException)
            {
            }

            lock (_pending)
            {
                foreach (var reply in _pending.Values)
                {
                    reply.TrySetException(new InvalidOperationException("the DevTools connection closed:\n" + Stderr));
                }

                _pending.Clear();
            }
        }

        public async ValueTask DisposeAsync()
        {
            if (_socket.State == WebSocketState.Open)
            {
                try
                {
                    await SendAsync("Browser.close").WaitAsync(TimeSpan.FromSeconds(5));
                }
                catch (Exception ex) when (ex is TimeoutException or InvalidOperationException or WebSocketException)
                {
                }
            }

            await _stop.CancelAsync();
            await _receiveLoop;
            if (!_process.WaitForExit(TimeSpan.FromSeconds(5)))
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync();
            }

            _process.Dispose();
            _socket.Dispose();
            _stop.Dispose();
            _sendLock.Dispose();
            try
            {
                Directory.Delete(_profile, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>One tab: evaluates JavaScript in it and collects its console errors and uncaught exceptions.</summary>
    sealed class Page(Chromium browser, string sessionId)
    {
        /// <summary>Installed in every document before its scripts: fill an input (firing input), click a button.</summary>
        public const string Helpers = """
            window.fill = (id, value) => {
              const el = document.getElementById(id);
              el.value = value;
              el.dispatchEvent(new Event('input', { bubbles: true }));
            };
            window.click = (id) => document.getElementById(id).click();
            """;

        readonly Channel<string> _errors = Channel.CreateUnbounded<string>();

        public string SessionId { get; } = sessionId;

        public IReadOnlyList<string> Errors
        {
            get
            {
                var errors = new List<string>();
                while (_errors.Reader.TryRead(out var error))
                {
                    errors.Add(error);
                }

                return errors;
            }
        }

        public Task<JsonObject> SendAsync(string method, JsonObject? parameters = null) => browser.SendAsync(method, parameters, SessionId);

        internal void OnEvent(string method, JsonObject parameters)
        {
            if (method == "Runtime.exceptionThrown")
            {
                _errors.Writer.TryWrite("exception: " + parameters["exceptionDetails"]?.ToJsonString());
            }
            else if (method == "Runtime.consoleAPICalled" && (string?)parameters["type"] == "error")
            {
                _errors.Writer.TryWrite("console.error: " + parameters["args"]?.ToJsonString());
            }
        }

        public async Task<JsonNode?> EvaluateAsync(string expression)
        {
            var result = await SendAsync("Runtime.evaluate", new JsonObject
            {
                ["expression"] = expression,
                ["returnByValue"] = true,
                ["awaitPromise"] = true,
            });
            if (result["exceptionDetails"] is JsonNode exception)
            {
                throw new InvalidOperationException($"page threw on `{expression}`: {exception.ToJsonString()}");
            }

            return result["result"]?["value"];
        }

        public async Task<T> EvaluateAsync<T>(string expression) =>
            (await EvaluateAsync(expression))!.GetValue<T>();

        /// <summary>Polls <paramref name="condition"/> until it is true: the page's own state is the event waited on.</summary>
        public async Task WaitForAsync(string condition, string what)
        {
            var waited = Stopwatch.StartNew();
            while (true)
            {
                if (await EvaluateAsync($"!!({condition})") is JsonNode value && value.GetValue<bool>())
                {
                    return;
                }

                if (waited.Elapsed > TestClient.Timeout)
                {
                    var status = await EvaluateAsync("document.getElementById('status')?.textContent ?? ''");
                    var rows = await EvaluateAsync("[...document.querySelectorAll('#messages tr')].map(r => [r.dataset.dir, r.dataset.topic, r.dataset.payload, r.dataset.sender].join(' | ')).join('\\n')");
                    throw new TimeoutException($"waited {TestClient.Timeout.TotalSeconds} s for {what}; status: {status}; rows:\n{rows}\nerrors: {string.Join("\n", Errors)}");
                }

                await Task.Delay(50);
            }
        }

        /// <summary>Waits for a message row (dir in, out or error) and returns its ims-sender column.</summary>
        public async Task<string> WaitForRowAsync(string dir, string topic, string payload)
        {
            var find = RowJs(dir, topic, payload);
            await WaitForAsync(find, $"a row {dir} {topic} {payload}");
            return await EvaluateAsync<string>(find + ".dataset.sender");
        }
    }
}
