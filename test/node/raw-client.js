#!/usr/bin/env node
// A bare MQTT client (mqtt.js, what the Azure IoT SDK itself runs on) for
// what the SDK never does on purpose: a token that has expired, a token
// of another device, topics of another device.  One JSON line per event.
//
//   node raw-client.js --id dev-1 --key <device key> --hub <hub> --port 8883 --ca ca.crt
//        [--token-device <id whose resource the token names>] [--expires-in S (negative: expired)]
//        [--subscribe FILTER]... [--publish 'TOPIC|PAYLOAD']... [--wait-ms N]
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const mqtt = require('mqtt');

const options = { subscribe: [], publish: [], expiresIn: 3600, waitMs: 1500 };
for (let i = 2; i < process.argv.length; i++) {
  const name = process.argv[i];
  const value = process.argv[++i];
  switch (name) {
    case '--id': options.id = value; break;
    case '--key': options.key = value; break;
    case '--hub': options.hub = value; break;
    case '--port': options.port = Number(value); break;
    case '--ca': options.ca = value; break;
    case '--token-device': options.tokenDevice = value; break;
    case '--expires-in': options.expiresIn = Number(value); break;
    case '--subscribe': options.subscribe.push(value); break;
    case '--publish': options.publish.push(value); break;
    case '--wait-ms': options.waitMs = Number(value); break;
    default: throw new Error(`unknown option ${name}`);
  }
}

function say(event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ event }, fields || {})) + '\n');
}

// IoT Hub's SAS token, as the SDK makes it
function token(hub, device, key, expiresIn) {
  const resource = encodeURIComponent(`${hub}/devices/${device}`);
  const expiry = Math.floor(Date.now() / 1000) + expiresIn;
  const signature = crypto.createHmac('sha256', Buffer.from(key, 'base64'))
    .update(`${resource}\n${expiry}`).digest('base64');
  return `SharedAccessSignature sr=${resource}&sig=${encodeURIComponent(signature)}&se=${expiry}`;
}

const client = mqtt.connect({
  host: 'localhost', port: options.port, protocol: 'mqtts', ca: fs.readFileSync(options.ca),
  clientId: options.id, username: `${options.hub}/${options.id}/?api-version=2021-04-12`,
  password: token(options.hub, options.tokenDevice || options.id, options.key, options.expiresIn),
  protocolVersion: 4, clean: true, reconnectPeriod: 0,
});
client.on('connect', () => {
  say('connected');
  for (const filter of options.subscribe) {
    client.subscribe(filter, { qos: 0 }, (err, granted) =>
      say('suback', { filter, granted: granted ? granted.map((g) => g.qos) : null, error: err && err.message }));
  }
  for (const item of options.publish) {
    const at = item.indexOf('|');
    client.publish(item.slice(0, at), item.slice(at + 1), { qos: 1 }, (err) =>
      say('puback', { topic: item.slice(0, at), error: err && err.message }));
  }
  setTimeout(() => { say('done'); client.end(true, () => process.exit(0)); }, options.waitMs);
});
client.on('message', (topic, payload) => say('message', { topic, payload: payload.toString() }));
client.on('error', (err) => { say('refused', { message: err.message, code: err.code }); process.exit(0); });
client.on('close', () => say('closed'));
