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
    const row = document.createElement('tr');
    row.dataset.dir = dir;
    row.dataset.topic = topic;
    row.dataset.payload = payload;
    row.dataset.sender = sender;
    for (const [cls, text] of [['time', new Date().toLocaleTimeString()], ['dir', dir], ['topic', topic], ['payload', payload], ['sender', sender]]) {
      const cell = document.createElement('td');
      cell.className = cls;
      cell.textContent = text; // never innerHTML: payloads come from other users
      row.appendChild(cell);
    }
    $('messages').prepend(row);
  }

  function publish(topic, text) {
    if (!client) {
      return;
    }
    client.publish(topic, text, { qos: 1 }, (err) => {
      if (err) {
        addRow('error', topic, text, 'refused: ' + err.message);
      } else {
        addRow('out', topic, text, me);
      }
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
    });
    client.on('message', (topic, payload, packet) => {
      addRow('in', topic, new TextDecoder().decode(payload), senderOf(packet));
    });
    client.on('error', (err) => setStatus('error', err.message));
    client.on('close', () => {
      if ($('status').dataset.state !== 'error') {
        setStatus('offline', 'offline');
      }
      connected(false);
      client.end(true);
      client = null;
    });
  });

  $('disconnect').addEventListener('click', () => {
    if (client) {
      client.end();
    }
  });

  $('dm').addEventListener('submit', (event) => {
    event.preventDefault();
    publish(parent + '/' + $('dm-to').value.trim() + '/Inbox/Msg/' + me, $('dm-text').value);
    $('dm-text').value = '';
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
