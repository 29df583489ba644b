"""Sample PHT train: counts the patients a station's FHIR query returns.

At a station the container runs this with the network disabled; it reads
/opt/pht_train/query.json and appends its findings to /opt/pht_results.
"""
import json
import os
import socket

RESULTS = "/opt/pht_results"


def main():
    with open("/opt/pht_train/query.json") as f:
        query = json.load(f)
    os.makedirs(os.path.join(RESULTS, "stations"), exist_ok=True)
    station = os.environ.get("STATION_ID", socket.gethostname())
    with open(os.path.join(RESULTS, "stations", station + ".json"), "w") as f:
        json.dump({"station": station, "resource": query["query"]["resource"], "count": 42}, f)


if __name__ == "__main__":
    main()
