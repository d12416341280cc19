// IMS Broker chat page. Uses MQTT.js 5.16.0 (../lib/mqtt.min.js, MIT, see ../lib/mqtt.LICENSE.txt),
// the browser bundle dist/mqtt.min.js of the npm package mqtt@5.16.0, served by the broker itself.
// MQTT 5 over ws(s)://<this host>/mqtt, client id GID_IMS@@@<device>; topics as in docs/conventions.md.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const parent = 'IMS';
  const groupId = 'GID_IMS';
  let client = null;
  let me = null;
  let group = null;
  const peers = new Map(); // user -> <li> with its presence dot (kept across reconnects, resubscribed on connect)

  // Delivered ticks (docs/conventions.md §10). A receipt carries only {id, user, client, at}: the ims-id
  // of the message, which the publisher never learns at send time (the PUBACK carries no id, and the page
  // cannot read the recipient's inbox), so receipts are matched by order:
  // - only direct messages ask for receipts, so a receipt from user U is about a direct message to U
  //   (never about a group or P2P message U also got);
  // - the broker gives one connection's publishes increasing ids in the order they arrive, and each of
  //   U's devices acknowledges U's inbox messages in that order (MQTT keeps the order of one topic);
  // so the first receipt bearing an id not seen yet is for the oldest direct message to U not matched
  // yet, and every later receipt with that id (U's other devices, a repeat after a broker crash) ticks
  // the same message. Limit: a message none of U's devices ever acknowledges (U had only clean-session
  // devices, all offline when it was sent) would shift the ticks of U's later messages by one.
  const unmatched = new Map(); // recipient user -> records in send order, {row, id, failed, devices}
  const byId = new Map(); // ims-id -> record

  function receiptArrived(receipt) {
    let record = byId.get(receipt.id);
    if (!record) {
      const list = unmatched.get(receipt.user) || [];
      while (list.length && (list[0].id !== null || list[0].failed)) {
        list.shift();
      }
      record = list.find((r) => r.id === null && !r.failed);
      if (!record) {
        return;
      }
      record.id = receipt.id;
      byId.set(receipt.id, record);
    }
    record.devices.add(receipt.client);
    const cell = record.row.querySelector('td.receipt');
    cell.textContent = '✓';
    cell.title = 'delivered to ' + [...record.devices].join(', ') + ' (last at ' + new Date(receipt.at).toLocaleTimeString() + ')';
    record.row.dataset.delivered = [...record.devices].join(' ');
  }

  function presenceArrived(user, presence) {
    const item = peers.get(user);
    if (!item) {
      return;
    }
    item.dataset.online = presence.online ? 'true' : 'false';
    item.title = presence.online
      ? 'online: ' + (presence.devices || []).join(', ')
      : 'offline' + (presence.lastSeen ? ', last seen ' + new Date(presence.lastSeen).toLocaleString() : '');
  }

  function watch(user) {
    if (!user || user === me || user.includes('/') || user.includes('+') || user.includes('#')) {
      return;
    }
    if (!peers.has(user)) {
      const item = document.createElement('li');
      item.dataset.user = user;
      item.dataset.online = 'unknown';
      item.title = 'no presence known yet';
      const dot = document.createElement('span');
      dot.className = 'dot';
      item.append(dot, user);
      $('peers').appendChild(item);
      peers.set(user, item);
      if (client) {
        subscribePresence(user);
      }
    }
  }

  function subscribePresence(user) {
    // Retained: the current value arrives at once, then every change.
    client.subscribe(parent + '/' + user + '/Presence', { qos: 1 }, (err) => {
      if (err && peers.has(user)) {
        peers.get(user).title = 'presence refused: ' + err.message;
      }
    });
  }

  function setStatus(state, text) {
    const status = $('status');
    status.dataset.state = state;
    status.textContent = text;
  }

  function senderOf(packet) {
    const props = (packet && packet.properties && packet.properties.userProperties) || {};
    const value = props['ims-sender'];
    return Array.isArray(value) ? value.join(',') : (value || '');
  }

  // One row per message: data-* attributes carry the raw values (the browser test reads them).
  function addRow(dir, topic, payload, sender) {
    const row = newRow(dir, topic, payload, sender);
    $('messages').prepend(row);
    return row;
  }

  function setCell(row, cls, text) {
    row.querySelector('td.' + cls).textContent = text;
  }

  function newRow(dir, topic, payload, sender) {
    const row = document.createElement('tr');
    row.dataset.dir = dir;
    row.dataset.topic = topic;
    row.dataset.payload = payload;
    row.dataset.sender = sender;
    for (const [cls, text] of [['time', new Date().toLocaleTimeString()], ['dir', dir], ['topic', topic], ['payload', payload], ['sender', sender], ['receipt', '']]) {
      const cell = document.createElement('td');
      cell.className = cls;
      cell.textContent = text; // never innerHTML: payloads come from other users
      row.appendChild(cell);
    }
    return row;
  }

  // The row appears at once ("sending") and becomes "out" on the PUBACK or "error" if refused. A receipt
  // can come before the PUBACK, so a direct message is queued for its tick at send time.
  function publish(topic, text, receiptFrom) {
    if (!client) {
      return;
    }
    const row = addRow('sending', topic, text, '');
    const options = { qos: 1 };
    let record = null;
    if (receiptFrom) {
      options.properties = { userProperties: { 'ims-receipt': 'delivered' } };
      record = { row: row, id: null, failed: false, devices: new Set() };
      if (!unmatched.has(receiptFrom)) {
        unmatched.set(receiptFrom, []);
      }
      unmatched.get(receiptFrom).push(record);
    }
    client.publish(topic, text, options, (err) => {
      if (err) {
        if (record) {
          record.failed = true;
        }
        row.dataset.dir = 'error';
        row.dataset.sender = 'refused: ' + err.message;
      } else {
        row.dataset.dir = 'out';
        row.dataset.sender = me;
      }
      setCell(row, 'dir', row.dataset.dir);
      setCell(row, 'sender', row.dataset.sender);
    });
  }

  function updateClientId() {
    $('client-id').textContent = groupId + '@@@' + ($('device').value || $('device').placeholder);
  }

  function connected(value) {
    $('connect').disabled = value;
    $('disconnect').disabled = !value;
    for (const id of ['user', 'password', 'device']) {
      $(id).disabled = value;
    }
    $('chat').hidden = !value;
    if (!value) {
      group = null;
      $('group-send').disabled = true;
      $('group-state').textContent = '';
    }
  }

  $('user').addEventListener('input', () => {
    const user = $('user').value || 'alice';
    $('password').placeholder = user + '-pass';
    $('device').placeholder = user + '-web';
    updateClientId();
  });
  $('device').addEventListener('input', updateClientId);
  updateClientId();

  $('login').addEventListener('submit', (event) => {
    event.preventDefault();
    if (client) {
      return;
    }
    me = $('user').value.trim();
    const clientId = groupId + '@@@' + ($('device').value.trim() || me + '-web');
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/mqtt';
    setStatus('connecting', 'connecting to ' + url);
    client = mqtt.connect(url, {
      protocolVersion: 5,
      clientId: clientId,
      username: me,
      password: $('password').value,
      clean: true,
      reconnectPeriod: 0, // a refused login should say so, not loop
      connectTimeout: 10000,
    });
    client.on('connect', () => {
      connected(true);
      const inbox = parent + '/' + me + '/Inbox/#';
      $('inbox-filter').textContent = inbox;
      client.subscribe(inbox, { qos: 1 }, (err) => {
        if (err) {
          setStatus('error', 'inbox subscription refused: ' + err.message);
        } else {
          // "connected" only once the inbox is subscribed: messages sent from now on arrive.
          setStatus('connected', 'connected as ' + me + ' (' + clientId + ')');
        }
      });
      for (const user of peers.keys()) {
        subscribePresence(user);
      }
    });
    // The inbox filter IMS/<me>/Inbox/# also brings the receipts, IMS/<me>/Inbox/Receipt/Delivered/<user>
    // (a second, overlapping subscription could bring each one twice).
    const receipts = parent + '/' + me + '/Inbox/Receipt/Delivered/';
    client.on('message', (topic, payload, packet) => {
      const text = new TextDecoder().decode(payload);
      const levels = topic.split('/');
      const presence = levels.length === 3 && levels[2] === 'Presence' && peers.has(levels[1]) && senderOf(packet) === '$broker';
      if (topic.startsWith(receipts) || presence) {
        let json = null;
        try {
          json = JSON.parse(text);
        } catch (e) {
          // not ours to show: both topics are written by the broker only
        }
        if (json && topic.startsWith(receipts)) {
          receiptArrived(json);
        } else if (json) {
          presenceArrived(levels[1], json);
        }
        return;
      }
      const sender = senderOf(packet);
      if (sender && sender !== '$broker') {
        watch(sender);
      }
      addRow('in', topic, text, sender);
    });
    client.on('error', (err) => setStatus('error', err.message));
    client.on('close', () => {
      if ($('status').dataset.state !== 'error') {
        setStatus('offline', 'offline');
      }
      connected(false);
      client.end(true);
      client = null;
      for (const item of peers.values()) {
        item.dataset.online = 'unknown';
        item.title = 'not connected';
      }
    });
  });

  $('disconnect').addEventListener('click', () => {
    if (client) {
      client.end();
    }
  });

  $('dm').addEventListener('submit', (event) => {
    event.preventDefault();
    const to = $('dm-to').value.trim();
    watch(to);
    publish(parent + '/' + to + '/Inbox/Msg/' + me, $('dm-text').value, to);
    $('dm-text').value = '';
  });

  $('peer-form').addEventListener('submit', (event) => {
    event.preventDefault();
    watch($('peer').value.trim());
    $('peer').value = '';
  });

  $('group-join').addEventListener('submit', (event) => {
    event.preventDefault();
    if (!client) {
      return;
    }
    const wanted = $('group').value.trim();
    if (group && group !== wanted) {
      client.unsubscribe(parent + '/' + group + '/#');
    }
    $('group-state').textContent = 'joining…';
    client.subscribe(parent + '/' + wanted + '/#', { qos: 1 }, (err) => {
      if (err) {
        group = null;
        $('group-send').disabled = true;
        $('group-state').textContent = 'refused: ' + err.message;
      } else {
        group = wanted;
        $('group-send').disabled = false;
        $('group-state').textContent = 'joined ' + wanted;
      }
    });
  });

  $('group-form').addEventListener('submit', (event) => {
    event.preventDefault();
    if (group) {
      publish(parent + '/' + group + '/' + me, $('group-text').value);
      $('group-text').value = '';
    }
  });

  $('p2p').addEventListener('submit', (event) => {
    event.preventDefault();
    publish(parent + '/p2p/' + $('p2p-target').value.trim(), $('p2p-text').value);
    $('p2p-text').value = '';
  });
})();
